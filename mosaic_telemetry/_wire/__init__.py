"""Everything the SDK knows about the wire format of Telemetry API v1, in one package.

``http`` holds every path, header, JSON key and limit of ``wire-v1.md``; ``events`` writes and
reads event JSON; ``replies`` turns an events reply into a ``SendResult`` (verdicts, 422
indices, Retry-After, redaction of an echoed key); ``predictions`` builds prediction queries
and reads their answers. A server that differs from wire-v1 needs a change here and nowhere
else. Nothing here does I/O.
"""
