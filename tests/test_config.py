"""TelemetryConfig: env fallbacks, validation, key hiding, outbox location."""

from __future__ import annotations

from pathlib import Path

import pytest

from mosaic_telemetry import TelemetryConfig

from .helpers import API_KEY, INSTANCE_ID

ENV = {
    "MOSAIC_TELEMETRY_SERVER_URL": "https://tel.example.test",
    "MOSAIC_TELEMETRY_API_KEY": API_KEY,
    "MOSAIC_TELEMETRY_INSTANCE_ID": INSTANCE_ID,
    "MOSAIC_TELEMETRY_ENABLED": "false",
    "MOSAIC_TELEMETRY_DRY_RUN": "1",
    "MOSAIC_TELEMETRY_OUTBOX_PATH": "/tmp/from-env.sqlite3",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every MOSAIC_TELEMETRY_* variable set."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("env")
def test_env_vars_are_read() -> None:
    """TelemetryConfig() reads all six variables."""
    config = TelemetryConfig()
    assert config.server_url == "https://tel.example.test"
    assert config.api_key == API_KEY
    assert config.instance_id == INSTANCE_ID
    assert (config.enabled, config.dry_run) == (False, True)
    assert config.outbox_path == "/tmp/from-env.sqlite3"
    assert config.validate() == []


@pytest.mark.usefixtures("env")
def test_constructor_beats_env() -> None:
    """A constructor value wins over its env var."""
    config = TelemetryConfig(server_url="http://127.0.0.1:9", enabled=True, dry_run=False)
    assert (config.server_url, config.enabled, config.dry_run) == (
        "http://127.0.0.1:9",
        True,
        False,
    )


def test_defaults_without_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without env vars the upstream defaults apply and the missing values are problems."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    config = TelemetryConfig()
    assert (config.enabled, config.dry_run, config.batch_size) == (True, False, 100)
    assert (config.submit_interval_seconds, config.max_queue_size) == (300.0, 200_000)
    assert (config.request_timeout_seconds, config.max_retries) == (10.0, 3)
    assert config.prediction_cache_ttl_seconds == 21600.0
    assert (config.durability, config.shutdown_timeout_seconds) == ("normal", 5.0)
    fields = [p.split(":", 1)[0] for p in config.validate()]
    assert fields == ["server_url", "api_key", "instance_id"]


def test_validate_names_each_bad_value() -> None:
    """Each unusable value is one problem naming its field and rule."""
    config = TelemetryConfig(
        server_url="ftp://x",
        api_key="a" * 63,
        instance_id="nope",
        batch_size=101,
        max_queue_size=0,
        submit_interval_seconds=-1,
        max_retries=True,
        durability="fast",  # type: ignore[arg-type]
    )
    problems = config.validate()
    fields = [p.split(":", 1)[0] for p in problems]
    assert fields == [
        "server_url",
        "api_key",
        "instance_id",
        "submit_interval_seconds",
        "max_queue_size",
        "batch_size",
        "max_retries",
        "durability",
    ]
    assert "1..100" in problems[fields.index("batch_size")]
    assert "a" * 63 not in " ".join(problems)


def test_bad_boolean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreadable MOSAIC_TELEMETRY_ENABLED is a problem, and telemetry stays on."""
    monkeypatch.setenv("MOSAIC_TELEMETRY_ENABLED", "perhaps")
    config = TelemetryConfig(
        server_url="http://127.0.0.1:1", api_key=API_KEY, instance_id=INSTANCE_ID
    )
    assert config.enabled is True
    assert config.validate() == ["enabled: must be true or false (MOSAIC_TELEMETRY_ENABLED)"]


def test_repr_hides_the_key() -> None:
    """repr() never shows the API key."""
    config = TelemetryConfig(server_url="https://x.test", api_key=API_KEY, instance_id=INSTANCE_ID)
    assert API_KEY not in repr(config)
    assert "'***'" in repr(config)


def test_outbox_path_default_and_dry_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Default: one file per server+instance in the state dir; dry-run uses a file of its own."""
    monkeypatch.setattr("mosaic_telemetry._config.default_outbox_dir", lambda: tmp_path)
    monkeypatch.delenv("MOSAIC_TELEMETRY_OUTBOX_PATH", raising=False)
    a = TelemetryConfig(server_url="https://a.test", api_key=API_KEY, instance_id=INSTANCE_ID)
    b = TelemetryConfig(server_url="https://b.test", api_key=API_KEY, instance_id=INSTANCE_ID)
    dry = TelemetryConfig(
        server_url="https://a.test", api_key=API_KEY, instance_id=INSTANCE_ID, dry_run=True
    )
    assert a.resolved_outbox_path().parent == tmp_path
    assert a.resolved_outbox_path() != b.resolved_outbox_path()
    assert dry.resolved_outbox_path().name.endswith(".dry-run.sqlite3")
    assert dry.resolved_outbox_path() != a.resolved_outbox_path()
    explicit = TelemetryConfig(outbox_path=tmp_path / "x.sqlite3", dry_run=True)
    assert explicit.resolved_outbox_path() == tmp_path / "x.dry-run.sqlite3"


OTHER_KEY = "cd" * 32


@pytest.mark.parametrize(
    "field", ["instance_id", "server_url", "batch_size", "submit_interval_seconds", "durability"]
)
def test_a_key_in_any_setting_is_never_echoed(field: str) -> None:
    """A key (ours or any key-shaped text) put in another setting is hidden from validate() and
    repr(), though the problem still names the field."""
    values: dict[str, object] = {
        "server_url": "https://x.test",
        "api_key": API_KEY,
        "instance_id": INSTANCE_ID,
    }
    for key in (API_KEY, OTHER_KEY):
        values[field] = f"https://{key}" if field == "server_url" else key
        config = TelemetryConfig(**values)  # type: ignore[arg-type]
        texts = " ".join(config.validate()) + repr(config)
        assert key[:12] not in texts and key[-12:] not in texts
        if field != "server_url":  # a URL with a key-like host is a valid URL
            assert [p.split(":", 1)[0] for p in config.validate()] == [field]


def test_validate_does_not_fail_on_an_unreadable_url() -> None:
    """A URL urlsplit cannot read (an open IPv6 bracket) is a problem, not an exception."""
    config = TelemetryConfig(server_url="http://[::1", api_key=API_KEY, instance_id=INSTANCE_ID)
    assert [p.split(":", 1)[0] for p in config.validate()] == ["server_url"]


def test_a_key_with_whitespace_around_it_is_stripped_and_inside_it_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whitespace around a constructor key is stripped (no log line shows the key);
    whitespace inside one is a problem that says so."""
    with caplog.at_level("INFO", logger="mosaic_telemetry"):
        config = TelemetryConfig(
            server_url="https://x.test", api_key=f"\t{API_KEY} \n", instance_id=INSTANCE_ID
        )
    assert (config.api_key, config.validate()) == (API_KEY, [])
    assert all(API_KEY not in r.getMessage() for r in caplog.records)
    inside = TelemetryConfig(
        server_url="https://x.test",
        api_key=API_KEY[:32] + " " + API_KEY[32:],
        instance_id=INSTANCE_ID,
    )
    [problem] = inside.validate()
    assert problem.startswith("api_key:") and "whitespace inside" in problem
