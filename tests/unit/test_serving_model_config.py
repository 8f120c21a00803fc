"""ModelServerConfig text format and version policies, as TF Serving reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.model_config import (
    ConfigError,
    VersionPolicy,
    load_model_config_file,
    parse_model_server_config,
    versions_on_disk,
)

CONFIG = """
model_config_list {
  config {
    name: "mask_detector"
    base_path: "/models/mask_detector"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config {
    name: "other"
    base_path: "/models/other"
    model_version_policy { all {} }
  }
  config {
    name: "third"
    base_path: "/models/third"
  }
}
"""


@pytest.mark.timeout(10)
def test_parse_full_config() -> None:
    mask, other, third = parse_model_server_config(CONFIG)
    assert mask.name == "mask_detector" and mask.base_path == "/models/mask_detector"
    assert mask.policy == VersionPolicy(kind="specific", versions=(1, 2))
    assert dict(mask.labels) == {"stable": 1, "canary": 2}
    assert other.policy.kind == "all"
    assert third.policy == VersionPolicy(kind="latest", num_versions=1)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'model_config_list { config { name: "a" base_path: "/a" } config { name: "a" base_path: "/b" } }',
            "Illegal to list model a multiple times",
        ),
        ('model_config_list { config { name: "a" } }', "base_path is empty"),
        ('model_config_list { config { base_path: "/a" } }', "empty name"),
        ('model_config_list { config { name: "a" base_path: "/a" model_platform: "onnx" } }', "not supported"),
        (
            'model_config_list { config { name: "a" base_path: "/a" model_version_policy { specific {} } } }',
            "lists no versions",
        ),
        ("model_config_list { nonsense: 1 }", "nonsense"),
    ],
)
def test_refused_configs(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_model_server_config(text)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("policy", "on_disk", "aspired"),
    [
        (VersionPolicy(), [1, 2, 3], {3}),
        (VersionPolicy(num_versions=2), [1, 2, 3], {2, 3}),
        (VersionPolicy(), [], set()),
        (VersionPolicy(kind="all"), [1, 5], {1, 5}),
        (VersionPolicy(kind="specific", versions=(1, 4)), [1, 2, 3], {1}),
    ],
)
def test_policy_aspired(policy: VersionPolicy, on_disk: list[int], aspired: set[int]) -> None:
    assert policy.aspired(on_disk) == aspired


@pytest.mark.timeout(10)
def test_bad_policy_values() -> None:
    with pytest.raises(ConfigError):
        VersionPolicy(kind="newest")
    with pytest.raises(ConfigError):
        VersionPolicy(num_versions=0)


@pytest.mark.timeout(10)
def test_versions_on_disk_lists_numbered_dirs_only(tmp_path: Path) -> None:
    for name in ("1", "10", "2", "tmp", ".staging-3"):
        (tmp_path / name).mkdir()
    (tmp_path / "4").write_text("a file, not a version")
    assert versions_on_disk(str(tmp_path)) == [1, 2, 10]
    assert versions_on_disk(str(tmp_path / "missing")) == []


@pytest.mark.timeout(10)
def test_repo_models_config_parses() -> None:
    path = Path(__file__).resolve().parents[2] / "serving" / "models.config"
    (model,) = load_model_config_file(str(path))
    assert model.name == "mask_detector"
