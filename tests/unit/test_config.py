"""Settings: the TOML file, environment overrides, REDIS_URL and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("APP_CONFIG_FILE", raising=False)


def write_config(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    monkeypatch.setenv("APP_CONFIG_FILE", str(path))


def test_the_shipped_file_holds_the_defaults() -> None:
    settings = load_settings()
    assert settings.redis.url == ""
    assert settings.embedded.shards == 3
    assert settings.embedded.replicas_per_shard == 1
    assert settings.workers.enabled is True


def test_file_then_environment_then_redis_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(
        tmp_path,
        '[redis]\nurl = "redis://file:1"\nmax_connections = 10\n[workers]\nbatch_size = 5\n',
        monkeypatch,
    )
    settings = load_settings()
    assert (settings.redis.url, settings.redis.max_connections) == ("redis://file:1", 10)
    monkeypatch.setenv("APP_REDIS__MAX_CONNECTIONS", "20")
    monkeypatch.setenv("APP_REDIS__URL", "redis://env:2")
    settings = load_settings()
    assert (settings.redis.url, settings.redis.max_connections) == ("redis://env:2", 20)
    monkeypatch.setenv("REDIS_URL", "rediss://user:secret@memorydb:6379")
    assert load_settings().redis.url == "rediss://user:secret@memorydb:6379"
    assert load_settings().workers.batch_size == 5


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "APP_REDIS__MAX_CONNECTIONS",
            "many",
            "redis.max_connections [env APP_REDIS__MAX_CONNECTIONS]",
        ),
        ("APP_WORKERS__BATCH_SIZE", "0", "workers.batch_size"),
        ("APP_SERVER__PORT", "70000", "server.port"),
        ("REDIS_URL", "http://example.com", "redis.url"),
        ("APP_WORKERS__BATCH", "1", "workers.batch"),
    ],
)
def test_bad_environment_value_is_one_line_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("configuration error: ")
    assert expected in message


def test_unknown_key_in_the_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, "[workers]\nbatchsize = 5\n", monkeypatch)
    with pytest.raises(ConfigError, match=r"workers\.batchsize.*Extra inputs"):
        load_settings()


def test_malformed_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, "[redis\nurl = ", monkeypatch)
    with pytest.raises(ConfigError, match=r"config\.toml"):
        load_settings()


def test_missing_explicit_file_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_CONFIG_FILE", "/nonexistent/config.toml")
    with pytest.raises(ConfigError, match="no such file"):
        load_settings()


def test_blocking_reads_must_fit_the_socket_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_WORKERS__BLOCK_MS", "3000")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        "configuration error: workers.block_ms (3000) must be at most half of "
        "redis.socket_timeout_s (5.0 s)"
    )


def test_the_event_retention_must_outlast_a_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PROFILES__EVENTS_RETENTION_S", "30")
    with pytest.raises(
        ConfigError, match=r"events_retention_s \(30 s\) must be longer than .*35 s"
    ):
        load_settings()
    monkeypatch.setenv("APP_PROFILES__EVENTS_RETENTION_S", "36")
    monkeypatch.setenv("APP_PROFILES__EVENT_STREAMS", "4")
    loaded = load_settings()
    assert (loaded.profiles.events_retention_s, loaded.profiles.event_streams) == (36, 4)
    monkeypatch.setenv("APP_PROFILES__EVENT_STREAMS", "65")
    with pytest.raises(ConfigError, match=r"profiles\.event_streams"):
        load_settings()


@pytest.mark.parametrize(
    "secret",
    [None, "development-only-secret-do-not-use-in-production", "short", ""],
    ids=["missing", "default", "short", "empty"],
)
def test_production_refuses_a_missing_default_or_short_secret(
    monkeypatch: pytest.MonkeyPatch, secret: str | None
) -> None:
    monkeypatch.setenv("APP_SERVER__ENVIRONMENT", "production")
    if secret is not None:
        monkeypatch.setenv("APP_SESSIONS__SECRET_KEY", secret)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "sessions.secret_key [env APP_SESSIONS__SECRET_KEY]" in message
    assert "\n" not in message
    if secret:
        assert secret not in message  # never echo a secret


@pytest.mark.parametrize(
    ("services", "refused"),
    [("profiles,reporting", False), ("sessions", True), ("profiles,sessions", True), ("", True)],
)
def test_production_wants_the_secret_only_where_sessions_run(
    monkeypatch: pytest.MonkeyPatch, services: str, refused: bool
) -> None:
    monkeypatch.setenv("APP_SERVER__ENVIRONMENT", "production")
    monkeypatch.setenv("APP_SERVER__SERVICES", services)
    if refused:
        with pytest.raises(ConfigError, match=r"sessions\.secret_key"):
            load_settings()
    else:
        assert load_settings().server.services == ("profiles", "reporting")


def test_production_accepts_a_real_secret_and_development_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().server.environment == "development"
    monkeypatch.setenv("APP_SERVER__ENVIRONMENT", "production")
    monkeypatch.setenv("APP_SESSIONS__SECRET_KEY", "x" * 40)
    settings = load_settings()
    assert settings.sessions.secret_key.get_secret_value() == "x" * 40
    assert "x" * 40 not in repr(settings)
