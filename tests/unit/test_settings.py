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
