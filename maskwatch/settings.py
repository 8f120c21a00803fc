"""Settings shared by every service (addresses, names); each service extends `CommonSettings` with its own, and its
`__main__` puts command-line flags over the environment with `settings_from_argv` (`add_flags`, `flags_over_env`)."""

from __future__ import annotations

import argparse
import types
from collections.abc import Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from maskwatch.buckets import TopicScheme
from maskwatch.detections import DEFAULT_MIN_SCORE
from maskwatch.frames import DLQ_TOPIC, MAX_FRAME_BYTES, MAX_PIXELS
from maskwatch.intake import DEFAULT_MAX_AGE_MS
from maskwatch.store import DEFAULT_PREFIX


class CommonSettings(BaseSettings):
    """Addresses from MW_KAFKA, MW_REDIS_URL, MW_SERVING; defaults reach the embedded stack."""

    # env_ignore_empty: an empty variable (`MW_KAFKA_SASL_MECHANISM=` in a Secret, `KEY:` in compose) means unset.
    model_config = SettingsConfigDict(env_prefix="MW_", extra="forbid", frozen=True, env_ignore_empty=True)

    kafka: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL")
    serving: str = Field("127.0.0.1:8500", description="TensorFlow Serving gRPC address host:port")
    redis_prefix: str = Field(DEFAULT_PREFIX, min_length=1, max_length=32, description="Prefix of every Redis key")
    topic: str = Field("frames", min_length=1, max_length=200, description="Kafka topic carrying frames")
    dlq_topic: str = Field(DLQ_TOPIC, min_length=1, max_length=200, description="Dead-letter topic")
    topic_rotate_s: int = Field(
        0,
        ge=0,
        le=86_400,
        description=(
            "0: frames go to `topic`, bounded by the broker's retention (Apache Kafka). >0: frames go to time-bucketed"
            " topics `{topic}.{bucket start, epoch s}` of this many seconds, deleted once consumed (the embedded broker,"
            " which has no retention; `maskwatch up` sets it)"
        ),
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol (MSK / Confluent Cloud: SASL_SSL)"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol is SASL_*"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password")
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle for the broker's certificate (default: system)")
    kafka_ssl_certfile: str | None = Field(None, description="Client certificate (mutual TLS)")
    kafka_ssl_keyfile: str | None = Field(None, description="Client key (mutual TLS)")
    min_score: float = Field(
        DEFAULT_MIN_SCORE,
        ge=0,
        le=1,
        description="Detections scoring below this are not counted or drawn (the model reports candidates lower)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    log_format: Literal["kv", "json"] = Field("kv", description="key=value lines or JSON lines")

    def topic_scheme(self) -> TopicScheme:
        """Which topic a frame goes to (producers) and which topics to follow (workers)."""
        return TopicScheme(self.topic, self.topic_rotate_s)

    def bootstrap(self) -> list[str]:
        return [s.strip() for s in self.kafka.split(",") if s.strip()]

    @model_validator(mode="after")
    def _sasl_complete(self) -> CommonSettings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "kafka_security_protocol SASL_* needs MW_KAFKA_SASL_MECHANISM, MW_KAFKA_SASL_USERNAME and MW_KAFKA_SASL_PASSWORD"
            )
        return self

    def kafka_client_config(self) -> dict[str, Any]:
        """Keyword arguments for every kafka-python client: bootstrap servers and security."""
        cfg: dict[str, Any] = {"bootstrap_servers": self.bootstrap(), "security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL_"):
            cfg["sasl_mechanism"] = self.kafka_sasl_mechanism
            cfg["sasl_plain_username"] = self.kafka_sasl_username
            cfg["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
        for name in ("cafile", "certfile", "keyfile"):
            value = getattr(self, f"kafka_ssl_{name}")
            if value:
                cfg[f"ssl_{name}"] = value
        return cfg


class FrameSettings(CommonSettings):
    """What a consumed frame is judged by (`maskwatch.intake`): the workers', and the janitor's (`maskwatch up`)
    for a bucket that expired unread, so a frame is judged the same whoever reads it."""

    max_frame_age_s: float = Field(
        DEFAULT_MAX_AGE_MS / 1000, gt=0, description="Frames older than this when consumed are counted dropped_stale"
    )
    max_frame_bytes: int = Field(MAX_FRAME_BYTES, ge=1024, description="Larger frames are dead-lettered")
    max_frame_pixels: int = Field(
        MAX_PIXELS,
        ge=64 * 64,
        le=8192 * 8192,
        description="Frames whose JPEG header announces more pixels are dead-lettered too_large, never decoded",
    )
    open_registration: bool = Field(
        False,
        description="Count frames of any camera id (a lab); off, frames of cameras the site does not list (no "
        "producer registered them) are dead-lettered unknown_camera and register nothing",
    )


S = TypeVar("S", bound=BaseSettings)


def env_name(settings: type[BaseSettings], field: str) -> str:
    """The environment variable a settings field is read from: its alias, else the env prefix and its name."""
    alias = settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else str(settings.model_config.get("env_prefix", "")) + field.upper()


def add_flags(parser: argparse.ArgumentParser, settings: type[BaseSettings], *fields: str, **renamed: str) -> None:
    """A command-line flag for each named field of `settings`: `--field-name`, or the flag `renamed` gives it
    (`site_file="--site"`); typed as the field (a Literal's values are the choices, a bool is --x/--no-x), its help
    the field's description, variable and default. A flag left out is None: `flags_over_env` keeps the variable."""
    for name in (*fields, *renamed):
        info = settings.model_fields[name]
        default = "" if info.default_factory is not None or info.default is None else f", default {info.default!r}"
        parser.add_argument(
            renamed.get(name, "--" + name.replace("_", "-")),
            dest=name,
            default=None,
            help=f"{info.description} (env {env_name(settings, name)}{default})",
            **_flag_kind(info.annotation),
        )


def _flag_kind(annotation: Any) -> dict[str, Any]:
    """argparse's type, choices or action for a field's annotation (`X | None` is X)."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Literal:
        return {"choices": list(get_args(annotation))}
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    return {"type": annotation if annotation in (int, float) else str}


def settings_from_argv(
    settings: type[S], argv: Sequence[str] | None, prog: str, description: str | None, *fields: str, **renamed: str
) -> S:
    """A service's settings as its process runs with them: its flags for `fields` (`add_flags`) parsed from `argv`
    (None: the command line) over its environment variables (raises pydantic's ValidationError; bad flags exit 2)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_flags(parser, settings, *fields, **renamed)
    return flags_over_env(settings, parser.parse_args(argv))


def flags_over_env(settings: type[S], args: argparse.Namespace) -> S:
    """`settings` read from the environment, with the flags given on the command line over it: the namespace's values
    of the settings' fields that are not None (raises pydantic's ValidationError)."""
    return settings(**{k: v for k, v in vars(args).items() if k in settings.model_fields and v is not None})
