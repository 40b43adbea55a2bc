"""Delivery: the transport seam, the HTTP transport, the retry policy, the reply policy and the
worker thread that drains the outbox through them."""
