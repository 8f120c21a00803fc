"""Version lifecycle with a fake loader: latest policy, swaps, failed loads, unload after in-flight calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from serving.manager import AVAILABLE, END, UNLOADING, ManagerOptions, ModelManager
from serving.model_config import ConfigError, ModelConfig, VersionPolicy
from serving.servable import LoadError
from serving.status import ServingError


class FakeServable:
    def __init__(self, name: str, version: int, path: str) -> None:
        self.name, self.version, self.path = name, version, path
        self.released = False

    def release(self) -> None:
        self.released = True


class FakeLoader:
    """Loads any numbered dir; a dir holding a file named BROKEN fails; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.loaded: dict[int, FakeServable] = {}
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, name: str, version: int, path: str) -> Any:
        self.calls.append((name, version))
        self.gate.wait(10)
        if (Path(path) / "BROKEN").exists():
            raise LoadError(f"cannot load {path}", grpc.StatusCode.DATA_LOSS)
        self.loaded[version] = FakeServable(name, version, path)
        return self.loaded[version]


def _poll(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def _states(manager: ModelManager, name: str = "m") -> dict[int, str]:
    return {s.version: s.state_name for s in manager.status(name)}


def _manager(loader: FakeLoader, **options: Any) -> ModelManager:
    return ModelManager(ManagerOptions(poll_wait_seconds=0, max_num_load_retries=0, **options), loader=loader)  # type: ignore[arg-type]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "1").mkdir()
    return tmp_path


@pytest.mark.timeout(20)
def test_latest_version_served_and_replaced(base: Path) -> None:
    loader = FakeLoader()
    manager = _manager(loader)
    manager.apply_config([ModelConfig("m", str(base))])
    assert manager.wait_until_settled(timeout=5)
    with manager.acquire("m") as servable:
        assert servable.version == 1
    (base / "2").mkdir()
    manager.poll()
    _poll(lambda: _states(manager) == {2: "AVAILABLE", 1: "END"})
    with manager.acquire("m") as servable:
        assert servable.version == 2
    assert [v.version for v in manager.status("m")] == [2, 1]
    manager.close()


@pytest.mark.timeout(20)
def test_failed_new_version_keeps_previous_serving(base: Path) -> None:
    loader = FakeLoader()
    manager = _manager(loader)
    manager.apply_config([ModelConfig("m", str(base))])
    assert manager.wait_until_settled(timeout=5)
    (base / "2").mkdir()
    (base / "2" / "BROKEN").write_text("")
    manager.poll()
    _poll(lambda: _states(manager).get(2) == "END")
    (failed,) = manager.status("m", 2)
    assert failed.error is not None and failed.error.code == grpc.StatusCode.DATA_LOSS
    assert "cannot load" in failed.error.message
    assert _states(manager)[1] == "AVAILABLE"
    with manager.acquire("m") as servable:
        assert servable.version == 1
    manager.poll()
    assert loader.calls.count(("m", 2)) == 1, "a failed version is not reloaded while its directory stays"
    manager.close()


@pytest.mark.timeout(20)
def test_unload_waits_for_in_flight_calls(base: Path) -> None:
    loader = FakeLoader()
    manager = _manager(loader)
    manager.apply_config([ModelConfig("m", str(base))])
    assert manager.wait_until_settled(timeout=5)
    with manager.acquire("m"):
        (base / "2").mkdir()
        manager.poll()
        _poll(lambda: _states(manager) == {2: "AVAILABLE", 1: "UNLOADING"})
        assert not loader.loaded[1].released
        with manager.acquire("m") as new:
            assert new.version == 2
        with pytest.raises(ServingError, match=r"Specific\(m, 1\)"), manager.acquire("m", 1):
            pass
    _poll(lambda: _states(manager)[1] == "END")
    assert loader.loaded[1].released
    manager.close()


@pytest.mark.timeout(20)
def test_retry_interval_and_retries(base: Path) -> None:
    (base / "1" / "BROKEN").write_text("")
    loader = FakeLoader()
    manager = ModelManager(
        ManagerOptions(poll_wait_seconds=0, max_num_load_retries=2, load_retry_interval_seconds=0.01),
        loader=loader,  # type: ignore[arg-type]
    )
    manager.apply_config([ModelConfig("m", str(base))])
    assert manager.wait_until_settled(timeout=5)
    assert loader.calls == [("m", 1)] * 3
    assert manager.load_failures() and "cannot load" in manager.load_failures()[0]
    manager.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("call", "code", "message"),
    [
        (
            lambda mgr: mgr.acquire("nope").__enter__(),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        (
            lambda mgr: mgr.acquire("m", 7).__enter__(),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(m, 7)",
        ),
        (lambda mgr: mgr.status("nope"), grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope"),
        (lambda mgr: mgr.status("m", 7), grpc.StatusCode.NOT_FOUND, "Could not find version 7 of model m"),
        (
            lambda mgr: mgr.resolve_label("m", "beta"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: beta",
        ),
    ],
)
def test_errors_as_tf_serving(
    base: Path, call: Callable[[ModelManager], object], code: grpc.StatusCode, message: str
) -> None:
    manager = _manager(FakeLoader())
    manager.apply_config([ModelConfig("m", str(base), labels={"stable": 1})])
    assert manager.wait_until_settled(timeout=5)
    with pytest.raises(ServingError) as raised:
        call(manager)
    assert (raised.value.code, raised.value.message) == (code, message)
    assert manager.resolve_label("m", "stable") == 1
    manager.close()


@pytest.mark.timeout(20)
def test_specific_and_all_policies_and_labels(base: Path) -> None:
    for version in (2, 3):
        (base / str(version)).mkdir()
    manager = _manager(FakeLoader())
    manager.apply_config(
        [
            ModelConfig(
                "s", str(base), VersionPolicy(kind="specific", versions=(1, 2)), labels={"stable": 1, "canary": 2}
            ),
            ModelConfig("a", str(base), VersionPolicy(kind="all")),
        ]
    )
    assert manager.wait_until_settled(timeout=5)
    manager.check_labels()
    assert _states(manager, "s") == {1: "AVAILABLE", 2: "AVAILABLE"}
    assert _states(manager, "a") == {1: "AVAILABLE", 2: "AVAILABLE", 3: "AVAILABLE"}
    with manager.acquire("s") as servable:
        assert servable.version == 2
    with manager.acquire("s", manager.resolve_label("s", "stable")) as servable:
        assert servable.version == 1
    manager.close()


@pytest.mark.timeout(20)
def test_label_on_unavailable_version_is_refused(base: Path) -> None:
    manager = _manager(FakeLoader())
    manager.apply_config([ModelConfig("m", str(base), labels={"stable": 9})])
    assert manager.wait_until_settled(timeout=5)
    with pytest.raises(ConfigError, match="not currently available"):
        manager.check_labels()
    manager.close()
    allowing = _manager(FakeLoader(), allow_version_labels_for_unavailable_models=True)
    allowing.apply_config([ModelConfig("m", str(base), labels={"stable": 9})])
    assert allowing.wait_until_settled(timeout=5)
    allowing.check_labels()
    allowing.close()


@pytest.mark.timeout(20)
def test_loading_state_and_settling(base: Path) -> None:
    loader = FakeLoader()
    loader.gate.clear()
    manager = _manager(loader)
    manager.apply_config([ModelConfig("m", str(base))])
    _poll(lambda: _states(manager) == {1: "LOADING"})
    assert not manager.wait_until_settled(timeout=0.05)
    loader.gate.set()
    assert manager.wait_until_settled(timeout=5)
    manager.close()
    assert _states(manager) == {1: "END"}


@pytest.mark.timeout(20)
def test_removed_model_is_unloaded_and_forgotten(base: Path) -> None:
    manager = _manager(FakeLoader())
    manager.apply_config([ModelConfig("m", str(base)), ModelConfig("n", str(base))])
    assert manager.wait_until_settled(timeout=5)
    manager.apply_config([ModelConfig("n", str(base))])
    _poll(lambda: manager.model_names() == ["n"])
    with pytest.raises(ServingError), manager.acquire("m"):
        pass
    manager.close()


@pytest.mark.timeout(20)
def test_empty_base_path_never_settles(tmp_path: Path) -> None:
    manager = _manager(FakeLoader())
    manager.apply_config([ModelConfig("m", str(tmp_path / "missing"))])
    stop = threading.Event()
    stop.set()
    assert not manager.wait_until_settled(stop=stop)
    assert not manager.wait_until_settled(timeout=0.05)
    manager.close()


@pytest.mark.timeout(10)
def test_state_constants() -> None:
    assert (AVAILABLE, UNLOADING, END) == (30, 40, 50)
