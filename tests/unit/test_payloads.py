"""What crosses processes as JSON: each payload survives its trip, a malformed notice is refused, the OpenAPI schemas
are the payloads' fields, and the pages' scripts take the names from the server instead of spelling them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from dashboard.pages import page_names
from maskwatch.detections import CLASS_NAMES, Counts
from maskwatch.payloads import (
    EVENTS,
    NAMESPACE,
    WINDOWS,
    CameraActivity,
    CameraSummary,
    LiveNotice,
    WorkerHeartbeat,
    json_schema,
)
from maskwatch.store import summarise

pytestmark = pytest.mark.timeout(30)

STATIC = Path(__file__).resolve().parents[2] / "dashboard" / "static"
VIOLATION = {"camera": "gate-1", "id": "1-1000-1000", "class": "without_mask", "state": "open", "ts_ms": 1}


def summary() -> CameraSummary:
    info = {"name": "Gate", "zone": "entrance", "status": "online", "fps": "4.5", "last_frame_ms": "9000", "last_capture_ms": "9500"}
    window = Counts(frames=4, faces=4, with_mask=3, without_mask=1, persons=2, persons_with_mask=1, faces_lt16=3, faces_ge64=1)
    return summarise("gate-1", info, window, window + Counts(frames=10), 15, 10_000)


def test_a_live_notice_goes_through_redis_unchanged() -> None:
    notice = LiveNotice("worker-1", 5, {"gate-1": CameraActivity(3, 4)}, (VIOLATION,))
    wire = json.dumps(notice.to_json())
    assert LiveNotice.from_json(wire) == notice
    assert LiveNotice.from_json(wire.encode()) == notice
    assert json.loads(wire) == {
        "type": "batch", "worker": "worker-1", "ts_ms": 5,
        "cameras": {"gate-1": {"frames": 3, "last_frame_ms": 4}}, "violations": [VIOLATION],
    }  # fmt: skip


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("not json", id="not JSON"),
        pytest.param("[1, 2]", id="not an object"),
        pytest.param('{"type": "batch"}', id="no cameras"),
        pytest.param('{"cameras": ["gate-1"]}', id="cameras not an object"),
    ],
)
def test_a_malformed_notice_is_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        LiveNotice.from_json(raw)


@pytest.mark.parametrize(
    ("cameras", "violations", "kept_cameras", "kept_violations"),
    [
        pytest.param({"../etc": {"frames": 1}, "gate-1": {"frames": 2}}, [], {"gate-1": CameraActivity(2)}, 0, id="a bad camera id"),
        pytest.param({"gate-1": "two"}, [], {"gate-1": CameraActivity()}, 0, id="a camera without figures is still named"),
        pytest.param({"gate-1": {"frames": "2", "last_frame_ms": True}}, [], {"gate-1": CameraActivity()}, 0, id="figures not integers"),
        pytest.param({}, [VIOLATION, {"x": 1}, {**VIOLATION, "camera": "a b"}, "v"], {}, 1, id="violations of no valid camera"),
        pytest.param({}, {"not": "a list"}, {}, 0, id="violations not a list"),
    ],
)
def test_a_notice_keeps_only_what_names_a_valid_camera(
    cameras: dict[str, Any], violations: Any, kept_cameras: dict[str, CameraActivity], kept_violations: int
) -> None:
    notice = LiveNotice.from_json(json.dumps({"cameras": cameras, "violations": violations}))
    assert notice.cameras == kept_cameras
    assert len(notice.violations) == kept_violations


def test_a_camera_summary_round_trips_and_says_what_the_api_shows() -> None:
    s = summary()
    body = s.to_json()
    assert CameraSummary.from_json(json.dumps(body)) == s
    assert body["window"]["with_mask"] == 3 and body["totals"]["frames"] == 14
    assert body["persons"] == {"persons": 2, "persons_with_mask": 1, "persons_without_mask": 0, "persons_mask_worn_incorrectly": 0}
    assert (body["compliance"], body["lag"], body["data_age_s"], body["warnings"]) == (0.75, 0.5, 1.0, ["faces_too_small"])
    with pytest.raises(ValueError):
        CameraSummary.from_json({k: v for k, v in body.items() if k != "window"})


def test_a_worker_heartbeat_reads_back_from_the_redis_hash() -> None:
    beat = WorkerHeartbeat("degraded", "redis: down", (0, 3), 2, 12.5, 1000, 60, 41.2, 7)
    # the store writes each field as a string (lists as JSON) and adds ts_ms
    stored = {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in beat.to_json().items()} | {"ts_ms": "9000"}
    back = WorkerHeartbeat.from_json(stored)
    assert back.partitions == (0, 3) and back.ts_ms == 9000
    assert back == WorkerHeartbeat(**{**beat.__dict__, "ts_ms": 9000})
    with pytest.raises(ValueError):
        WorkerHeartbeat.from_json({"fps": "1"})


@pytest.mark.parametrize(("payload", "example"), [(CameraSummary, summary), (WorkerHeartbeat, lambda: WorkerHeartbeat("ok", "", (1,), 1, 1.0, 1, 1, 1.0, 0))])
def test_the_openapi_schema_is_the_payload(payload: type, example: Any) -> None:
    schema = json_schema(payload)
    body = example().to_json()
    assert set(schema["properties"]) >= set(body) and set(schema["required"]) <= set(body)
    kinds = {"string": str, "integer": int, "number": (int, float), "array": list, "object": dict}
    for name, value in body.items():
        prop = schema["properties"][name]
        if "$ref" in prop:
            assert prop["$ref"] == "#/components/schemas/Counts" and set(value) == set(Counts().as_dict())
            continue
        types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        assert value is None and "null" in types or isinstance(value, tuple(kinds[t] for t in types if t != "null")), name


def test_the_pages_are_told_the_names_they_use() -> None:
    names = page_names()
    assert (names["namespace"], names["events"], names["windows"]) == (NAMESPACE, EVENTS, WINDOWS)
    assert {c["field"] for c in names["classes"]} == set(CLASS_NAMES.values())
    assert [c["field"] for c in names["classes"] if not c["violation"]] == ["with_mask"]


@pytest.mark.parametrize("script", sorted(p.name for p in STATIC.glob("*.js")))
def test_no_script_spells_an_event_window_or_class(script: str) -> None:
    code = "\n".join(line.split("//")[0] for line in (STATIC / script).read_text().splitlines())
    quoted = [rf"[\"'`]{re.escape(name)}[\"'`]" for name in (*EVENTS.values(), NAMESPACE, *WINDOWS)]
    as_keys = [rf"(?<![.\w]){name}\s*:" for name in EVENTS.values()]  # { system: onSystem }
    words = [rf"\b{name}\b" for name in (*CLASS_NAMES.values(), "camera_update")]  # w.with_mask, { with_mask: 0 }
    assert [p for p in (*quoted, *as_keys, *words) if re.search(p, code)] == []
