"""Shared settings: env names, Kafka security config, and clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from maskwatch.settings import CommonSettings


def test_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MW_KAFKA", "k1:9092, k2:9092")
    monkeypatch.setenv("MW_REDIS_URL", "rediss://:secret@redis.example:6380/0")
    monkeypatch.setenv("MW_SERVING", "tfs:8500")
    s = CommonSettings()
    assert s.bootstrap() == ["k1:9092", "k2:9092"]
    assert s.redis_url.startswith("rediss://") and s.serving == "tfs:8500"
    assert s.kafka_client_config() == {"bootstrap_servers": ["k1:9092", "k2:9092"], "security_protocol": "PLAINTEXT"}


def test_sasl_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MW_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("MW_KAFKA_SASL_USERNAME", "key")
    monkeypatch.setenv("MW_KAFKA_SASL_PASSWORD", "secret")
    monkeypatch.setenv("MW_KAFKA_SSL_CAFILE", "/etc/ssl/ca.pem")
    cfg = CommonSettings().kafka_client_config()
    assert cfg["security_protocol"] == "SASL_SSL" and cfg["sasl_mechanism"] == "PLAIN"
    assert cfg["sasl_plain_username"] == "key" and cfg["sasl_plain_password"] == "secret"
    assert cfg["ssl_cafile"] == "/etc/ssl/ca.pem"
    assert "secret" not in repr(CommonSettings())


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "MW_KAFKA_SASL_MECHANISM"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"redis_prefix": ""}, "redis_prefix"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_settings_name_the_field(kw: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as e:
        CommonSettings(**kw)  # type: ignore[arg-type]
    assert field in str(e.value)


@pytest.mark.parametrize(
    "settings_class",
    ["maskwatch.settings:CommonSettings", "worker.settings:WorkerSettings", "producer.settings:ProducerSettings",
     "dashboard.settings:DashboardSettings"],
)
def test_an_empty_variable_means_unset_in_every_service(monkeypatch: pytest.MonkeyPatch, settings_class: str) -> None:
    """A Secret or env file line `MW_KAFKA_SASL_MECHANISM=` (and compose's `KEY:`) arrives as an empty string."""
    import importlib

    module, _, name = settings_class.partition(":")
    cls = getattr(importlib.import_module(module), name)
    for var in ("MW_KAFKA_SASL_MECHANISM", "MW_KAFKA_SASL_USERNAME", "MW_KAFKA_SSL_CAFILE", "MW_LOG_LEVEL", "MW_KAFKA"):
        monkeypatch.setenv(var, "")
    s = cls()
    assert s.kafka_sasl_mechanism is None and s.kafka_ssl_cafile is None
    assert s.log_level == "INFO" and s.kafka == "127.0.0.1:9092"
    monkeypatch.setenv("MW_KAFKA_SASL_MECHANISM", "NTLM")
    with pytest.raises(ValidationError, match="kafka_sasl_mechanism"):
        cls()


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        ([], {"kafka": "env:9092", "min_score": 0.5, "log_level": "INFO", "topic": "frames"}),
        (["--kafka", "flag:9092"], {"kafka": "flag:9092"}),
        (["--min-score", "0.25"], {"min_score": 0.25}),
        (["--log-level", "DEBUG"], {"log_level": "DEBUG"}),
        (["--frames-topic", "cams"], {"topic": "cams"}),
    ],
)
def test_flags_over_the_environment(monkeypatch: pytest.MonkeyPatch, argv: list[str], want: dict[str, object]) -> None:
    """A flag given wins over its variable; a flag left out leaves the variable (or the default)."""
    import argparse

    from maskwatch.settings import add_flags, flags_over_env

    monkeypatch.setenv("MW_KAFKA", "env:9092")
    monkeypatch.delenv("MW_TOPIC", raising=False)
    ap = argparse.ArgumentParser()
    add_flags(ap, CommonSettings, "kafka", "min_score", "log_level", topic="--frames-topic")
    s = flags_over_env(CommonSettings, ap.parse_args(argv))
    assert {k: getattr(s, k) for k in want} == want


@pytest.mark.parametrize(
    "argv",
    [["--log-level", "LOUD"], ["--min-score", "high"], ["--topic", "t"], ["--kafka"]],
)
def test_bad_flags_exit_2(argv: list[str]) -> None:
    """Flags are typed as their fields: a value outside a Literal's choices or not a number is refused by argparse."""
    import argparse

    from maskwatch.settings import add_flags

    ap = argparse.ArgumentParser()
    add_flags(ap, CommonSettings, "kafka", "min_score", "log_level", topic="--frames-topic")
    with pytest.raises(SystemExit) as e:
        ap.parse_args(argv)
    assert e.value.code == 2


def test_a_bool_flag_sets_either_way_and_help_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from dashboard.settings import DashboardSettings
    from maskwatch.settings import add_flags, flags_over_env

    monkeypatch.setenv("MW_DASHBOARD_MESSAGE_QUEUE", "true")
    ap = argparse.ArgumentParser()
    add_flags(ap, DashboardSettings, "message_queue", "port")
    assert flags_over_env(DashboardSettings, ap.parse_args([])).message_queue is True
    assert flags_over_env(DashboardSettings, ap.parse_args(["--no-message-queue"])).message_queue is False
    text = " ".join(ap.format_help().split())  # as wrapped to any terminal's width
    assert "(env MW_DASHBOARD_PORT, default 5000)" in text
