"""Settings: ``alembic-free-config.toml``, overridden by the environment.

Precedence, highest first: arguments to ``Settings(...)``, ``REDIS_URL`` (for ``redis.url``),
environment variables ``APP_<SECTION>__<KEY>`` (for example ``APP_REDIS__MAX_CONNECTIONS=128``,
``APP_WORKERS__ENABLED=false``), then the TOML file. The file is ``alembic-free-config.toml`` in
the working directory, else the one next to the ``app`` package; ``APP_CONFIG_FILE`` names
another. Unknown keys are errors, so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_NAME = "alembic-free-config.toml"
DEFAULT_REDIS_PORT = 6379
ENV_PREFIX = "APP_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Section(BaseModel):
    """Base of every settings section: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(Section):
    url: str = ""
    max_connections: PositiveInt = 256
    socket_timeout_s: PositiveFloat = 5.0
    socket_connect_timeout_s: PositiveFloat = 2.0
    retry_attempts: Annotated[int, Field(ge=0)] = 60
    retry_backoff_base_s: PositiveFloat = 0.05
    retry_backoff_cap_s: PositiveFloat = 0.25
    retry_deadline_s: PositiveFloat = 4.5
    tls_ca_file: str = ""
    tls_check_hostname: bool = True
    # Send the read-only work of read routes (a profile, a customer, a listing page, the
    # report) to the replicas of each slot's shard; writes stay on primaries. A read just
    # after a write may miss it (docs/guarantees.md).
    read_from_replicas: bool = False

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://")):
            raise ValueError("must start with redis:// or rediss://")
        return value


class EmbeddedSettings(Section):
    host: str = "127.0.0.1"
    base_port: Annotated[int, Field(ge=1, le=55535 - 16)] = 7100
    shards: PositiveInt = 3
    replicas_per_shard: Annotated[int, Field(ge=0)] = 1
    data_dir: Path = Path("var/redis")
    redis_server: str = "redis-server"
    start_timeout_s: PositiveFloat = 60.0
    # Create a least-privilege ACL user per service on every node (passwords generated once and
    # kept in acl-passwords.json in data_dir) and connect each service with its own user.
    acl: bool = False

    def resolved_data_dir(self) -> Path:
        """Return the data directory, relative paths taken from the project root."""
        return self.data_dir if self.data_dir.is_absolute() else PROJECT_ROOT / self.data_dir


def _names(value: object) -> object:
    """Accept a list of names as a comma-separated string (the environment's form) too."""
    if isinstance(value, str):
        return tuple(name.strip() for name in value.split(",") if name.strip())
    return value


class ServerSettings(Section):
    # The services this process runs (empty: all of them): their routes and workers; health,
    # docs and metrics always run. "profiles,reporting" in the environment.
    services: Annotated[tuple[str, ...], NoDecode] = ()
    host: str = "127.0.0.1"
    port: Port = 8000
    workers: PositiveInt = 1
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # Outside "development", start-up refuses the default or a short sessions.secret_key.
    environment: Literal["development", "production"] = "development"

    @field_validator("services", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _names(value)


class ServiceSettings(Section):
    # This service's own Redis (its cluster, or its user on the shared one); empty: redis.url.
    redis_url: str = ""

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        return RedisSettings._known_scheme(value)


class WorkerSettings(Section):
    enabled: bool = True
    consumer_name: str = ""
    consumers_per_process: PositiveInt = 1
    batch_size: Annotated[int, Field(gt=0, le=10000)] = 200
    block_ms: Annotated[int, Field(gt=0)] = 1000
    claim_min_idle_ms: Annotated[int, Field(gt=0)] = 30000
    claim_interval_s: PositiveFloat = 5.0
    error_backoff_s: PositiveFloat = 0.5
    drain_timeout_s: PositiveFloat = 10.0


class MessagingSettings(Section):
    # A dedupe_id seen within this window answers the first message's id and enqueues nothing.
    dedupe_window_s: Annotated[int, Field(ge=1, le=7 * 86400)] = 300
    # How long a message's trace is kept after its last event.
    trace_retention_s: Annotated[int, Field(ge=60, le=400 * 86400)] = 86400
    # A long-polling receive looks again this often (a publish in the same process wakes it
    # at once).
    poll_interval_ms: Annotated[int, Field(ge=5, le=5000)] = 100
    # Due delayed messages and expired leases handled per step, so no script runs long.
    housekeeping_batch: Annotated[int, Field(ge=1, le=10000)] = 100


MAX_EVENT_STREAMS = 64


class ProfileSettings(Section):
    # Profile events are spread over this many streams by user: profile:events, then
    # profile:events:1 ... profile:events:<n-1>, each in its own slot with its own consumer
    # group and read counts. Changing it needs `python -m app profiles event-streams N`.
    event_streams: Annotated[int, Field(ge=1, le=MAX_EVENT_STREAMS)] = 1
    # Events older than this that every consumer group has acknowledged are trimmed; so are
    # the aggregator's registers of profiles deleted longer ago than this.
    events_retention_s: Annotated[int, Field(ge=1, le=400 * 86400)] = 3600


class VideoSettings(Section):
    # Chunking workers per process (0: this process runs none), and the chunk length that
    # decides how many chunks a video gets.
    chunking_workers: Annotated[int, Field(ge=0, le=64)] = 1
    # Videos each chunking worker handles at once (its leases kept while it works).
    chunking_concurrency: Annotated[int, Field(ge=1, le=1000)] = 1
    chunk_duration_s: PositiveInt = 10


class TripSettings(Section):
    # The map is cut into square cells of this many degrees; a trip belongs to the cell of its
    # pickup, a driver to the cell they register in, and each cell's keys share one hash slot.
    region_size_deg: Annotated[float, Field(ge=0.01, le=90)] = 1.0

    @field_validator("region_size_deg")
    @classmethod
    def _divides_the_globe(cls, value: float) -> float:
        # Longitude cells must tile -180..180 exactly, so the cells on both sides of the
        # antimeridian are whole and a search across it finds the right ones.
        cells = 180 / value
        if abs(cells - round(cells)) > 1e-9:
            raise ValueError("must divide 180 degrees into a whole number of cells")
        return value


class LoggingSettings(Section):
    # "text": one human-readable line per record; "json": one JSON object per line, with the
    # record's context fields (request id, route, status, duration; stream, group, message id).
    format: Literal["text", "json"] = "text"
    # One line per HTTP request (method, route, status, duration, request id) from the service.
    access_log: bool = True


class MetricsSettings(Section):
    # Serve GET /metrics (Prometheus text format) and the live dashboard at /dashboard.
    enabled: bool = True
    # Values read from Redis (stream lag, queue depths, the cluster's nodes) are read at most
    # once per this many seconds, whatever the number of scrapers and dashboards.
    state_cache_s: Annotated[float, Field(ge=0, le=300)] = 2.0
    # Queues and topics read per refresh: a bound on its cost; the rest are counted, not read.
    max_channels: Annotated[int, Field(ge=0, le=100_000)] = 1000
    # Queues and topics exported with series of their own (the deepest first); the others are
    # summed under the label value "_other", so label values stay bounded.
    channel_series: Annotated[int, Field(ge=0, le=10_000)] = 100


# The development default of sessions.secret_key: known to everyone, so refused in production.
DEVELOPMENT_SECRET = "development-only-secret-do-not-use-in-production"  # noqa: S105
MIN_SECRET_LENGTH = 32


class SessionSettings(Section):
    cookie_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "session"
    lifetime_s: Annotated[int, Field(ge=1, le=400 * 86400)] = 7 * 86400
    rolling: bool = True
    secure: Literal["auto", "always", "never"] = "auto"
    secret_key: SecretStr = SecretStr(DEVELOPMENT_SECRET)


class Settings(BaseSettings):
    """Every setting of the service; see alembic-free-config.toml for what each one does."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    redis: RedisSettings = RedisSettings()
    embedded: EmbeddedSettings = EmbeddedSettings()
    server: ServerSettings = ServerSettings()
    workers: WorkerSettings = WorkerSettings()
    sessions: SessionSettings = SessionSettings()
    profiles: ProfileSettings = ProfileSettings()
    messaging: MessagingSettings = MessagingSettings()
    videos: VideoSettings = VideoSettings()
    trips: TripSettings = TripSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    # Per service, by name: [services.customers] redis_url = "..."
    services: dict[str, ServiceSettings] = {}

    def redis_url_for(self, service: str) -> str:
        """Return the Redis URL ``service`` connects with: its own, else redis.url."""
        own = self.services.get(service)
        return own.redis_url if own is not None and own.redis_url else self.redis.url

    def same_cluster(self, service: str, other: str) -> bool:
        """Return whether two services' URLs name the same endpoint (scheme, host and port;
        the user and password may differ)."""
        return _endpoint(self.redis_url_for(service)) == _endpoint(self.redis_url_for(other))

    @model_validator(mode="after")
    def _blocking_reads_fit_the_socket_timeout(self) -> Settings:
        # A stream read that blocks longer than the socket timeout times out, is re-sent, and
        # can leave delivered entries unseen; half leaves room for a slow reply.
        if self.workers.block_ms / 1000 > self.redis.socket_timeout_s / 2:
            raise ValueError(
                f"workers.block_ms ({self.workers.block_ms}) must be at most half of "
                f"redis.socket_timeout_s ({self.redis.socket_timeout_s} s)"
            )
        return self

    @model_validator(mode="after")
    def _retention_outlasts_a_claim(self) -> Settings:
        # A read of a profile deleted since can wait, pending with a dead consumer, until it is
        # claimed; applied after the deletion was forgotten, it would count for a profile that
        # no longer exists.
        claim_ms = self.workers.claim_min_idle_ms + self.workers.claim_interval_s * 1000
        if self.profiles.events_retention_s * 1000 <= claim_ms:
            raise ValueError(
                f"profiles.events_retention_s ({self.profiles.events_retention_s} s) must be "
                f"longer than workers.claim_min_idle_ms + workers.claim_interval_s "
                f"({claim_ms / 1000:g} s): a pending event must be claimed before the retention "
                "forgets what it refers to"
            )
        return self

    @model_validator(mode="after")
    def _production_has_a_secret(self) -> Settings:
        # Only a process that runs the sessions service signs anything (every one, by default).
        running_sessions = not self.server.services or "sessions" in self.server.services
        if self.server.environment == "development" or not running_sessions:
            return self
        secret = self.sessions.secret_key.get_secret_value()
        if secret == DEVELOPMENT_SECRET or len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                "sessions.secret_key [env APP_SESSIONS__SECRET_KEY] must be a random value of at "
                f"least {MIN_SECRET_LENGTH} characters, not the development default, when "
                f"server.environment is {self.server.environment!r} (try: python -c "
                "'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            RedisUrlSource(settings_cls),
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=config_file()),
        )


def _endpoint(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_REDIS_PORT


class RedisUrlSource(PydanticBaseSettingsSource):
    """``REDIS_URL``, the name every Redis tool and platform uses, sets ``redis.url``."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        url = os.environ.get("REDIS_URL")
        return {"redis": {"url": url}} if url else {}


def config_file() -> Path:
    """Return the configuration file in use."""
    explicit = os.environ.get("APP_CONFIG_FILE")
    if explicit:
        return Path(explicit)
    local = Path.cwd() / CONFIG_FILE_NAME
    return local if local.exists() else PROJECT_ROOT / CONFIG_FILE_NAME


class ConfigError(RuntimeError):
    """The configuration is invalid; the message is one line naming the key."""


def load_settings(**overrides: Any) -> Settings:
    """Load and validate the settings, raising ConfigError with one clear line."""
    explicit = os.environ.get("APP_CONFIG_FILE")
    if explicit and not Path(explicit).is_file():
        raise ConfigError(f"configuration error: APP_CONFIG_FILE={explicit}: no such file")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except ValueError as exc:  # a malformed TOML file
        raise ConfigError(f"configuration error: {config_file()}: {exc}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """Turn pydantic's report into one line: key, problem, offending value."""
    parts = []
    for error in exc.errors():
        if not error["loc"]:  # a rule across keys: its message names them
            parts.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        key = ".".join(str(item) for item in error["loc"])
        env = ENV_PREFIX + "__".join(str(item) for item in error["loc"]).upper()
        value = error.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        parts.append(f"{key} [env {env}]: {error['msg']}{shown}")
    return "configuration error: " + "; ".join(parts)
