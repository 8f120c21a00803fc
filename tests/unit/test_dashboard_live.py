"""The live emitter's pure parts: throttle, heartbeat rows, system state, and what one batch notice emits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dashboard.live import (
    MAX_VIOLATIONS_PER_BATCH,
    LiveEmitter,
    Throttle,
    heartbeat_rows,
    system_state,
)
from dashboard.settings import DashboardSettings
from maskwatch.detections import Counts
from maskwatch.payloads import EV_CAMERA, EV_VIOLATION, NAMESPACE, CameraSummary
from maskwatch.store import Keys


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeStore:
    """The reads camera_summary and system_state make, from dicts."""

    def __init__(self) -> None:
        self.keys = Keys("mw:")
        self.info: dict[str, dict[str, str]] = {}
        self.windows: dict[str, Counts] = {}
        self.beats: dict[str, dict[str, dict[str, str]]] = {"worker": {}, "producer": {}}

    def camera_ids(self) -> list[str]:
        return sorted(self.info)

    def retired_camera_ids(self) -> list[str]:
        return []

    def camera_info(self, cid: str) -> dict[str, str]:
        return self.info.get(cid, {})

    def camera_zones(self, cids: list[str]) -> dict[str, str]:
        return {c: self.info.get(c, {}).get("zone", "") for c in cids}

    def window(self, cid: str, minutes: int, now_ms: int | None = None) -> Counts:
        return self.windows.get(cid, Counts())

    def totals(self, cid: str) -> Counts:
        return self.windows.get(cid, Counts())

    def summaries_data(self, cids: list[str], minutes: int, now_ms: int) -> list[tuple[dict[str, str], Counts, Counts]]:
        return [(self.camera_info(c), self.window(c, minutes, now_ms), self.totals(c)) for c in cids]

    def heartbeats(self, kind: str) -> dict[str, dict[str, str]]:
        return self.beats[kind]


class FakeSocketIO:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def emit(self, event: str, data: dict[str, Any], **kw: Any) -> None:
        self.emitted.append((event, data, kw))

    def of(self, event: str) -> list[dict[str, Any]]:
        return [d for e, d, _ in self.emitted if e == event]


def test_throttle_emits_first_at_once_then_at_most_once_per_interval() -> None:
    clock = Clock()
    t = Throttle(0.25, clock)
    assert t.next_due_in() is None
    t.mark("a")
    assert t.next_due_in() == 0.0
    assert t.take_due() == ["a"]
    t.mark("a")
    t.mark("a")
    assert t.take_due() == []
    assert t.next_due_in() == pytest.approx(0.25)
    clock.t += 0.1
    assert t.take_due() == []
    assert t.next_due_in() == pytest.approx(0.15)
    clock.t += 0.15
    assert t.take_due() == ["a"], "the trailing mark is emitted once due"
    assert t.take_due() == []


def test_throttle_keys_are_independent() -> None:
    clock = Clock()
    t = Throttle(1.0, clock)
    t.mark("a")
    assert t.take_due() == ["a"]
    t.mark("a")
    t.mark("b")
    assert t.take_due() == ["b"]
    t.clear()
    clock.t += 5
    assert t.take_due() == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"fps": "12.5", "lag": "7"}, {"fps": 12.5, "lag": 7}),
        ({"partitions": "[0, 3]", "status": "ok"}, {"partitions": [0, 3], "status": "ok", "fps": None, "lag": None}),
        ({"reason": "{not json", "fps": "nan?"}, {"reason": "{not json", "fps": "nan?"}),
        ({"ts_ms": "9000"}, {"ts_ms": 9000, "age_s": 1.0}),
        ({}, {"age_s": None}),
    ],
)
def test_heartbeat_rows_parse_values(fields: dict[str, str], expected: dict[str, Any]) -> None:
    (row,) = heartbeat_rows({"w-1": fields}, now_ms=10_000)
    assert row["id"] == "w-1"
    assert {k: row[k] for k in expected} == expected


def test_heartbeat_rows_keep_machines_processes_and_files_from_viewers() -> None:
    fields = {"host": "ward-3-pc", "pid": "4242", "site_file": "/etc/maskwatch/site.yaml", "metrics_port": "9101",
              "reload_msg": "/etc/maskwatch/site.yaml:3: bad", "fps": "5", "cameras": "3"}
    (row,) = heartbeat_rows({"p-1": fields}, now_ms=10_000)
    assert row["fps"] == 5 and row["cameras"] == 3
    shown = repr(row)
    assert "ward-3-pc" not in shown and "4242" not in shown and "/etc/" not in shown and "9101" not in shown


def test_the_default_worker_id_names_no_machine() -> None:
    import os
    import socket

    from worker.settings import WorkerSettings

    wid = WorkerSettings().worker_id
    assert socket.gethostname() not in wid and str(os.getpid()) not in wid and wid != WorkerSettings().worker_id


def summary(cid: str, status: str, age: float | None, **window: int) -> CameraSummary:
    counts = Counts(**window)
    return CameraSummary(
        camera=cid, name=cid, site="", zone="", status=status, last_error="", fps=0.0, last_frame_ms=None,
        data_age_s=age, lag=None, window_minutes=15, window=counts, compliance=counts.compliance, totals=counts,
        persons={"persons": counts.persons}, warnings=(),
    )  # fmt: skip


def test_system_state_adds_up_cameras_and_workers() -> None:
    store = FakeStore()
    store.beats["worker"] = {"w1": {"fps": "5", "lag": "3"}, "w2": {"fps": "7", "lag": "4"}}
    state = system_state(
        store,  # type: ignore[arg-type]
        [
            summary("a", "online", 1.0, with_mask=3, without_mask=1, persons=2),
            summary("b", "online", 99.0, with_mask=1, mask_worn_incorrectly=1, persons=1),
            summary("c", "offline", 1.0),
            summary("d", "online", None),
        ],
        window_minutes=15,
        stale_after_s=30,
        throughput_fps=12.345,
        now_ms=0,
    )
    assert state["cameras"] == {"total": 4, "online": 1, "ids": ["a", "b", "c", "d"]}
    assert state["face_verdicts"] == 6 and state["compliance"] == round(4 / 6, 4)
    assert state["people"] == 3  # different people, not faces
    assert state["lag"] == 7 and [w["id"] for w in state["workers"]] == ["w1", "w2"]
    assert state["throughput_fps"] == 12.35


def test_system_state_without_people_has_no_compliance() -> None:
    state = system_state(
        FakeStore(),  # type: ignore[arg-type]
        [],
        window_minutes=15,
        stale_after_s=30,
        throughput_fps=None,
        now_ms=0,
    )
    assert state["compliance"] is None and state["lag"] is None and state["cameras"]["total"] == 0


def emitter() -> tuple[LiveEmitter, FakeStore, FakeSocketIO]:
    store, sio = FakeStore(), FakeSocketIO()
    store.info = {"gate-1": {"name": "Gate"}, "hall-2": {"name": "Hall"}}
    store.windows = {"gate-1": Counts(frames=2, faces=4, with_mask=3, without_mask=1)}
    live = LiveEmitter(sio, store, DashboardSettings(), clock=Clock())  # type: ignore[arg-type]
    return live, store, sio


def notice(**over: Any) -> str:
    payload: dict[str, Any] = {
        "type": "batch",
        "worker": "w1",
        "ts_ms": 1,
        "cameras": {"gate-1": {"frames": 2, "last_frame_ms": 1}},
        "violations": [
            {"camera": "gate-1", "id": "1-1000-1000", "class": "without_mask", "state": "open", "score": 0.9, "ts_ms": 1, "snapshot_ms": 1}
        ],
    }
    payload.update(over)
    return json.dumps(payload)


def test_a_batch_notice_pushes_only_its_cameras_and_its_violations() -> None:
    live, _, sio = emitter()
    live._on_update(notice())
    (v,) = sio.of(EV_VIOLATION)
    assert (v["camera"], v["id"], v["state"]) == ("gate-1", "1-1000-1000", "open")
    assert v["snapshot_url"] == "/api/cameras/gate-1/snapshots/1-1000-1000.jpg"
    live._emit_due()
    (update,) = sio.of(EV_CAMERA)
    assert update["camera"] == "gate-1" and update["name"] == "Gate" and update["compliance"] == 0.75
    # each goes to whoever sees everything, the camera's own room and its zone's (dashboard/access.py)
    zone = live.store.camera_info("gate-1").get("zone", "")
    rooms = ["site", "cam:gate-1", *([f"zone:{zone}"] if zone else [])]
    assert all(kw == {"namespace": NAMESPACE, "to": rooms} for _, _, kw in sio.emitted)
    assert live.stats["updates"] == 1


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        json.dumps({"type": "batch"}),
        json.dumps({"cameras": ["gate-1"]}),
        json.dumps([1, 2]),
    ],
)
def test_malformed_notices_are_counted_and_ignored(raw: str) -> None:
    live, _, sio = emitter()
    live._on_update(raw)
    live._emit_due()
    assert sio.emitted == [] and live.stats["bad_updates"] == 1


def test_bad_camera_ids_and_violation_floods_are_dropped() -> None:
    live, _, sio = emitter()
    flood = [{"camera": "gate-1", "class": "without_mask", "score": 0.5, "ts_ms": i} for i in range(100)]
    live._on_update(notice(cameras={"../etc": {"frames": 1}, "gate-1": {"frames": 1}}, violations=flood + [{"x": 1}]))
    live._emit_due()
    assert [u["camera"] for u in sio.of(EV_CAMERA)] == ["gate-1"]
    assert len(sio.of(EV_VIOLATION)) == MAX_VIOLATIONS_PER_BATCH


def test_throughput_counts_frames_over_the_last_seconds() -> None:
    live, _, _ = emitter()
    clock: Clock = live.clock  # type: ignore[assignment]
    assert live._throughput() is None, "too early to say"
    clock.t += 10
    for _ in range(5):
        live._on_update(notice(cameras={"gate-1": {"frames": 4}}))
    assert live._throughput() == pytest.approx(2.0)
    clock.t += 11
    assert live._throughput() == 0.0
