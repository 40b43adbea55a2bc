"""Scenario 9: security. The API key never appears in logs (any level, any logger), reprs,
exceptions, the outbox files or the CLI output, even when the server echoes it back; outbox
files are 0600 in a 0700 directory whatever the umask; TLS verification is on by default; and
a plain-http URL to a non-loopback host logs a warning.
"""

from __future__ import annotations

import http.server
import logging
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry import TelemetryClient, TelemetryConfig
from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from ..helpers import API_KEY, INSTANCE_ID, child_env, make_events
from .conftest import ROOT, inject_invalid, wait_until

Config = Callable[..., TelemetryConfig]
#: Every CLI command that runs without a server round trip of its own, and some that do.
CLI_COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["outbox", "list"],
    ["outbox", "list", "--dead", "--json"],
    ["outbox", "export"],
    ["outbox", "export", "--dead"],
    ["doctor"],
    ["doctor", "--json"],
    ["flush", "--json"],
    ["--debug", "status"],
]


def _echoing_faults() -> list[ScriptedReply]:
    """Replies that quote the key back at the SDK, in every place a detail can come from."""
    echo = f"your key {API_KEY} / Bearer {API_KEY}"
    return [
        ScriptedReply(status=500, body={"detail": echo}),
        ScriptedReply(status=503, body=echo.encode(), headers={"Retry-After": "0"}),
        ScriptedReply(status=422, body={"detail": [{"loc": ["body", "events", 0], "msg": echo}]}),
        ScriptedReply(status=200, body=f"<html>{echo}</html>", store=True),
        ScriptedReply(status=401, body={"detail": echo}),
    ]


def test_api_key_appears_nowhere_after_a_full_run(
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    caplog: pytest.LogCaptureFixture,
    report: Callable[..., None],
) -> None:
    """Logs at DEBUG, reprs, exceptions, outbox/WAL bytes and CLI output never hold the key."""
    errors: list[BaseException] = []
    texts: list[str] = []
    client = TelemetryClient(
        make_config(on_error=errors.append, max_retries=1, submit_interval_seconds=0.2)
    )
    with caplog.at_level(logging.DEBUG):  # the root logger: requests, urllib3, ours
        client.start()
        server.script(*_echoing_faults())
        for _ in range(4):
            for event in make_events(5):
                client.track(event)
            client.flush(timeout=20)
        inject_invalid(outbox_path, 1)  # a rejection whose reason is stored in the dead table
        server.script(
            ScriptedReply(status=202, body={"results": [], "detail": API_KEY}, store=True)
        )
        assert wait_until(lambda: client.flush(timeout=10).remaining == 0, timeout=30)
        texts += [repr(client), repr(client._config), repr(client.stats()), str(client.stats())]
        texts += [repr(client._worker), repr(getattr(client._worker, "_sender", None))]
        texts += [repr(client._outbox), repr(client.flush(timeout=1))]
        client.stop()
    texts += [f"{e!s} {e!r}" for e in errors]
    texts += [f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    files = [p for p in outbox_path.parent.iterdir() if p.is_file()]
    blobs = {p.name: p.read_bytes() for p in files}
    cli_output = _run_cli(server, outbox_path)
    leaks = [t for t in texts if API_KEY in t] + [
        name for name, blob in blobs.items() if API_KEY.encode() in blob
    ]
    leaks += [c for c, out in cli_output.items() if API_KEY in out]
    report(
        "security",
        case="key search",
        log_records=len(caplog.records),
        texts=len(texts),
        files=sorted(blobs),
        cli_commands=len(cli_output),
        exceptions=len(errors),
        leaks=len(leaks),
    )
    assert len(caplog.records) > 20 and errors, "the run should have been noisy"
    assert leaks == []


def _run_cli(server: FakeTelemetryServer, outbox: Path) -> dict[str, str]:
    env = {
        **child_env(),
        "MOSAIC_TELEMETRY_SERVER_URL": server.url,
        "MOSAIC_TELEMETRY_API_KEY": API_KEY,
        "MOSAIC_TELEMETRY_INSTANCE_ID": INSTANCE_ID,
        "MOSAIC_TELEMETRY_OUTBOX_PATH": str(outbox),
    }
    output = {}
    for command in CLI_COMMANDS:
        done = subprocess.run(
            [sys.executable, "-m", "mosaic_telemetry", *command],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )
        output[" ".join(command)] = done.stdout + done.stderr
    return output


def test_outbox_files_are_private_whatever_the_umask(
    server: FakeTelemetryServer, tmp_path: Path, make_config: Config
) -> None:
    """With umask 000 the default outbox directory is 0700 and the db, -wal and -shm are 0600."""
    script = f"""
import os, sys
os.umask(0)
os.environ["XDG_STATE_HOME"] = {str(tmp_path / "state-home")!r}
from tests.helpers import API_KEY, INSTANCE_ID, make_events
from mosaic_telemetry import TelemetryClient, TelemetryConfig
client = TelemetryClient(TelemetryConfig(server_url={server.url!r}, api_key=API_KEY,
                                         instance_id=INSTANCE_ID))
for event in make_events(3):
    client.track(event)
print(client.stats()["outbox_path"], flush=True)
os._exit(0)  # keep -wal and -shm on disk
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=child_env(), cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path.is_relative_to(tmp_path / "state-home")
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in path.parent.iterdir() if p.is_file()}
    assert set(modes.values()) == {"0o600"}, modes
    assert {path.name, f"{path.name}-wal", f"{path.name}-shm"} <= set(modes)
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTPS server with a self-signed certificate; yields (url, paths requested)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.path)
            self.send_response(202)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def test_tls_verification_is_on_by_default(
    tls_server: tuple[str, list[str]],
    make_config: Config,
    outbox_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A self-signed certificate is refused: nothing reaches that server, the events stay."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    url, seen = tls_server
    with TelemetryClient(make_config(server_url=url, max_retries=0)) as client:
        for event in make_events(3):
            client.track(event)
        result = client.flush(timeout=20)
        last_error = str(client.stats()["last_error"])
    assert result.remaining == 3
    assert seen == []
    assert "certificate" in last_error.lower() or "ssl" in last_error.lower(), last_error


@pytest.mark.parametrize(
    ("url", "warns"),
    [
        ("http://telemetry.example.invalid", True),
        ("http://10.255.255.1:9", True),
        ("http://127.0.0.1:9", False),
        ("http://localhost:9", False),
    ],
)
def test_plain_http_to_a_remote_host_logs_a_warning(
    url: str, warns: bool, make_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    """http:// to anything but loopback logs one warning when sending starts; loopback none."""
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        client = TelemetryClient(make_config(server_url=url, shutdown_timeout_seconds=0.5))
        client.start()
        assert wait_until(
            lambda: (
                (client._worker is not None and client._worker._sender is not None)
                or client.stats()["last_error"] is not None
            ),
            timeout=10,
        )
        client.stop()
    warnings = [r.getMessage() for r in caplog.records if "plain http" in r.getMessage()]
    assert len(warnings) == (1 if warns else 0), warnings
    assert all(API_KEY not in w for w in warnings)
