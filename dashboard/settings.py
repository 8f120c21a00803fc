"""The dashboard's settings: `DashboardSettings`, read from MW_DASHBOARD_* (own fields) and MW_* (shared addresses)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import AliasGenerator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from maskwatch.frames import MAX_PIXELS
from maskwatch.net import is_loopback
from maskwatch.settings import CommonSettings

ENV_PREFIX = "MW_DASHBOARD_"


def _env(field: str) -> str | None:
    """The environment variable of a dashboard field, MW_DASHBOARD_<FIELD> (in code the field name works too:
    populate_by_name); None for a shared field, read as MW_<FIELD> through the env prefix."""
    return None if field in CommonSettings.model_fields else ENV_PREFIX + field.upper()


class DashboardSettings(CommonSettings):
    """Where the dashboard listens, what it shows, and who may see it.

    Shared addresses keep their names (MW_REDIS_URL, MW_SERVING, MW_REDIS_PREFIX); the dashboard's own
    fields are read from MW_DASHBOARD_<FIELD> (MW_DASHBOARD_PORT, MW_DASHBOARD_TOKEN, ...).
    """

    model_config = SettingsConfigDict(
        env_prefix="MW_",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        env_ignore_empty=True,
        # pydantic types the generator as returning a name, yet leaves a field unaliased on None (pydantic#13248)
        alias_generator=AliasGenerator(validation_alias=_env),  # type: ignore[arg-type]
    )

    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on")
    port: int = Field(5000, ge=0, le=65535, description="TCP port to listen on (0 picks a free one)")
    window_minutes: int = Field(
        15,
        ge=1,
        le=1440,
        description="Minutes of per-minute buckets summed for the live compliance figure",
    )
    token: SecretStr | None = Field(
        None,
        description="When set, every page, API call and socket needs it (Bearer header, ?token= or the login cookie)",
    )
    message_queue: bool = Field(
        False,
        description="Share live events between replicas through Redis; one replica, elected by a Redis lock, emits",
    )
    camera_update_hz: float = Field(
        4.0,
        gt=0,
        le=4.0,
        description="Most camera_update events per camera per second",
    )
    system_interval_s: float = Field(2.0, ge=0.5, le=60, description="Seconds between system events")
    stale_after_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="A camera whose newest counted frame is older than this is shown offline",
    )
    good_threshold: float = Field(0.9, ge=0, le=1, description="Compliance at or above this is green")
    warn_threshold: float = Field(
        0.75,
        ge=0,
        le=1,
        description="Compliance at or above this (and below good) is amber; below it is red",
    )
    leader_ttl_s: float = Field(
        10.0,
        ge=2,
        le=120,
        description="Expiry of the emitter leader lock (renewed every third of it) when message_queue is on",
    )
    predict_timeout_s: float = Field(10.0, gt=0, le=120, description="Deadline of one Predict call")
    max_upload_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest image accepted by POST /api/predict",
    )
    max_upload_pixels: int = Field(
        MAX_PIXELS,
        ge=64 * 64,
        le=8192 * 8192,
        description="Largest image, in pixels read from its header before decoding, accepted by POST /api/predict",
    )
    max_concurrent_predicts: int = Field(
        2,
        ge=1,
        le=64,
        description="Uploads checked at once by POST /api/predict; more get 429 with Retry-After",
    )

    server_threads: int = Field(
        32,
        ge=4,
        le=1000,
        description="Threads of the production server: requests served at once (each open live socket holds one)",
    )
    request_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="A request whose bytes stop coming for this long is dropped (half-sent requests free their "
        "thread); live sockets are exempt",
    )
    insecure: bool = Field(
        False,
        description="Allow listening on a non-loopback address with no token (anyone who can reach it sees the "
        "cameras); without it the dashboard refuses to start that way",
    )
    allowed_hosts: str = Field(
        "",
        max_length=2000,
        description="Host names (comma separated) requests may be addressed to, others get 400 (DNS rebinding); "
        "empty: localhost, 127.0.0.1, ::1 and the listen address, or any host when listening on all interfaces",
    )
    trusted_proxies: int = Field(
        0,
        ge=0,
        le=5,
        description="Reverse proxies in front of the dashboard whose X-Forwarded-For/-Proto/-Host are believed "
        "(client address for rate limits, https for Secure cookies and HSTS); 0 believes none",
    )
    session_ttl_s: int = Field(
        12 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="Lifetime of a login session (a random id in Redis; logout revokes it)",
    )
    auth_max_failures: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Failed logins or wrong tokens one client address may make per auth_window_s before 429",
    )
    auth_window_s: int = Field(
        300,
        ge=1,
        le=24 * 3600,
        description="Window of the failed-login limit, from the first failure",
    )

    site_file: str | None = Field(
        None,
        validation_alias="MW_SITE_FILE",
        description="Site YAML (the producer's): its time zone is used on the page and its `alerts:` rules are "
        "evaluated here",
    )
    cors_origins: str = Field(
        "",
        max_length=2000,
        description="Other origins (scheme://host[:port], comma separated) whose pages may call the API and open "
        "the socket; the dashboard's own origin always may",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: str) -> str:
        for origin in (o.strip() for o in v.split(",") if o.strip()):
            parts = urlsplit(origin)
            if (
                origin == "*"
                or parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path not in ("", "/")
            ):
                raise ValueError(f"{origin!r} is not an origin like https://ops.example.org (no '*', no path)")
        return v

    def allowed_origins(self) -> list[str]:
        """The configured extra origins, normalised (no trailing slash, lower-case scheme and host)."""
        return [o.strip().lower().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> DashboardSettings:
        if self.warn_threshold > self.good_threshold:
            raise ValueError(
                f"warn_threshold ({self.warn_threshold}) must not exceed good_threshold ({self.good_threshold})"
            )
        if self.token is not None and len(self.token.get_secret_value()) < 8:
            raise ValueError("token must be at least 8 characters")
        return self

    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token is not None else None

    def listens_on_loopback(self) -> bool:
        return is_loopback(self.host)

    def exposure_problem(self, access_tokens: bool = False) -> str | None:
        """Why the dashboard must not start as configured (open to the network without a token), or None.

        `access_tokens`: the site file lists `access:` tokens, which guard the dashboard as the main token does."""
        if self.token is None and not access_tokens and not self.listens_on_loopback() and not self.insecure:
            return (
                f"listening on {self.host} (not loopback) with no token: set MW_DASHBOARD_TOKEN, listen on "
                "127.0.0.1, or pass --insecure (MW_DASHBOARD_INSECURE=true) to serve the cameras to anyone"
            )
        return None

    def host_allow_list(self) -> frozenset[str] | None:
        """Host names requests may carry (lower case, no port); None when any host is accepted."""
        configured = [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]
        if "*" in configured:
            return None
        if configured:
            return frozenset(h.strip("[]") for h in configured)
        if self.host in WILDCARD_HOSTS:
            return None
        return frozenset(LOOPBACK_NAMES | {self.host.lower().strip("[]")})


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


