"""Which models to serve: TF Serving's ModelServerConfig text format and version policies."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

_VERSION_DIR = re.compile(r"^[0-9]+$")


class ConfigError(ValueError):
    """A model config that cannot be served; the message names the model and field."""


@dataclass(frozen=True)
class VersionPolicy:
    """ServableVersionPolicy: `latest` N (default 1), `all`, or `specific` versions."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in {"latest", "all", "specific"}:
            raise ConfigError(f"unknown version policy {self.kind!r}")
        if self.kind == "latest" and self.num_versions < 1:
            raise ConfigError(f"latest.num_versions must be positive, got {self.num_versions}")

    def aspired(self, on_disk: Iterable[int]) -> set[int]:
        """The versions found on disk that this policy wants served."""
        found = sorted(set(on_disk), reverse=True)
        if self.kind == "all":
            return set(found)
        if self.kind == "specific":
            return set(found) & set(self.versions)
        return set(found[: self.num_versions])


@dataclass(frozen=True)
class ModelConfig:
    """One served model: name, base path, version policy, version labels."""

    name: str
    base_path: str
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a model config has an empty name")
        if not self.base_path:
            raise ConfigError(f"model {self.name}: base_path is empty")


def from_flags(model_name: str, model_base_path: str) -> list[ModelConfig]:
    """The single model given by --model_name and --model_base_path."""
    return [ModelConfig(name=model_name, base_path=model_base_path)]


def _policy(config: model_server_config_pb2.ModelConfig) -> VersionPolicy:
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy(kind="all")
    if choice == "specific":
        if not policy.specific.versions:
            raise ConfigError(f"model {config.name}: model_version_policy.specific lists no versions")
        return VersionPolicy(kind="specific", versions=tuple(int(v) for v in policy.specific.versions))
    if choice == "latest" and policy.latest.num_versions:
        return VersionPolicy(kind="latest", num_versions=int(policy.latest.num_versions))
    return VersionPolicy()


def parse_model_server_config(text: str, source: str = "<config>") -> list[ModelConfig]:
    """Parse a ModelServerConfig text proto into model configs, validated as TF Serving does."""
    message = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ConfigError(f"{source}: {error}") from error
    return configs_from_proto(message, source)


def configs_from_proto(
    message: model_server_config_pb2.ModelServerConfig, source: str = "<config>"
) -> list[ModelConfig]:
    """Validate a ModelServerConfig message into model configs."""
    if message.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{source}: custom_model_config is not supported; use model_config_list")
    models: list[ModelConfig] = []
    seen: set[str] = set()
    for config in message.model_config_list.config:
        if config.name in seen:
            raise ConfigError(f"{source}: Illegal to list model {config.name} multiple times in config list")
        seen.add(config.name)
        if config.model_platform and config.model_platform != "tensorflow":
            raise ConfigError(f"{source}: model {config.name}: model_platform {config.model_platform!r} not supported")
        try:
            models.append(
                ModelConfig(
                    name=config.name,
                    base_path=config.base_path,
                    policy=_policy(config),
                    labels={label: int(version) for label, version in config.version_labels.items()},
                )
            )
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from error
    return models


def load_model_config_file(path: str) -> list[ModelConfig]:
    """Read --model_config_file."""
    with open(path, encoding="utf-8") as handle:
        return parse_model_server_config(handle.read(), source=path)


def versions_on_disk(base_path: str) -> list[int]:
    """The numbered version directories under a model base path (none when it is missing)."""
    try:
        names = os.listdir(base_path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        int(name) for name in names if _VERSION_DIR.match(name) and os.path.isdir(os.path.join(base_path, name))
    )
