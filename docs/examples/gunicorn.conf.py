"""gunicorn settings for an app that uses mosaic_telemetry with --preload.

Nothing telemetry-specific is needed: a client created in the preloading parent is reused by
every forked worker, which reopens the outbox and starts its own sending thread on first use.
The parent itself never sends (it does not call start()). Workers stop their client at exit;
if gunicorn kills a worker before that, its events are on disk and the next worker sends them.
"""

bind = "127.0.0.1:8000"
workers = 4
preload_app = True
graceful_timeout = 30  # longer than the client's shutdown_timeout_seconds (5 s by default)
