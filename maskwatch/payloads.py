"""What crosses processes as JSON beside the frame: the worker's live notice (`mw:updates`), the camera summary
(Contract 4's `camera_update` and the REST API), the worker heartbeat, and the live events' names and windows.

Each is a frozen type with `to_json` (the JSON object) and `from_json` (back, ValueError when malformed); the
OpenAPI schemas are generated from their fields (`json_schema`) and the page is told the names (dashboard/pages.py).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Union

from maskwatch.detections import COUNT_FIELDS, Counts
from maskwatch.frames import is_valid_camera_id

# Socket.IO: the namespace and the events the dashboard pushes on it
NAMESPACE = "/live"
EV_CAMERA = "camera_update"
EV_VIOLATION = "violation"
EV_SYSTEM = "system"
EV_ALERT = "alert"
EVENTS = {"camera": EV_CAMERA, "violation": EV_VIOLATION, "system": EV_SYSTEM, "alert": EV_ALERT}
# The windows the REST API and `maskwatch stats` answer for: label -> minutes of per-minute buckets.
WINDOWS: dict[str, int] = {"1m": 1, "15m": 15, "1h": 60, "24h": 1440}
# a camera summary's `persons`: unique people in the window, by verdict
PERSON_FIELDS = ("persons", "persons_with_mask", "persons_without_mask", "persons_mask_worn_incorrectly")
NOTICE_BATCH = "batch"
# a worker's heartbeat status: degraded while a dependency it needs is down
WORKER_OK = "ok"
WORKER_DEGRADED = "degraded"


def _about(description: str = "", **schema: Any) -> dict[str, Any]:
    """A field's metadata for `json_schema`: its description and any schema keywords (enum, items...)."""
    return {"schema": {**({"description": description} if description else {}), **schema}}


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} is not a JSON object")
    return data


def _parsed(raw: str | bytes | Mapping[str, Any], what: str) -> Mapping[str, Any]:
    """A JSON object, from its text or already parsed."""
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError as e:
            raise ValueError(f"{what} is not JSON: {e}") from None
    return _object(raw, what)


@dataclass(frozen=True)
class CameraActivity:
    """What one batch counted of one camera."""

    frames: int = field(default=0, metadata=_about("frames counted (invalid and stale ones not)", type="integer"))
    last_frame_ms: int = field(default=0, metadata=_about("capture time of its newest counted frame", type="integer"))


@dataclass(frozen=True)
class LiveNotice:
    """The worker's notice on `mw:updates` after it stored a batch (or closed idle episodes): the cameras it counted
    and the episode states worth announcing (`maskwatch.store.episode_notice`). The dashboard turns it into
    `camera_update` and `violation` events."""

    worker: str
    ts_ms: int
    cameras: Mapping[str, CameraActivity] = field(default_factory=dict)
    violations: tuple[Mapping[str, Any], ...] = ()
    type: str = NOTICE_BATCH

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "worker": self.worker,
            "ts_ms": self.ts_ms,
            "cameras": {cid: {"frames": c.frames, "last_frame_ms": c.last_frame_ms} for cid, c in self.cameras.items()},
            "violations": [dict(v) for v in self.violations],
        }

    @classmethod
    def from_json(cls, raw: str | bytes | Mapping[str, Any]) -> LiveNotice:
        """A notice as published; entries that name no valid camera are left out (a notice is read by every
        dashboard, so nothing in it may pick a room or a URL)."""
        data = _parsed(raw, "notice")
        if "cameras" not in data:
            raise ValueError("notice has no cameras")
        cameras = _object(data["cameras"], "cameras")
        violations = data.get("violations") or []
        return cls(
            worker=str(data.get("worker", "")),
            ts_ms=_int(data.get("ts_ms")),
            cameras={
                cid: CameraActivity(_int(info.get("frames")), _int(info.get("last_frame_ms")))
                if isinstance(info, Mapping)
                else CameraActivity()
                for cid, info in cameras.items()
                if isinstance(cid, str) and is_valid_camera_id(cid)
            },
            violations=tuple(
                v
                for v in (violations if isinstance(violations, list) else [])
                if isinstance(v, Mapping) and isinstance(v.get("camera"), str) and is_valid_camera_id(v["camera"])
            ),
            type=str(data.get("type", NOTICE_BATCH)),
        )


def _int(v: Any) -> int:
    """A JSON integer, else 0 (a bool is no count)."""
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


@dataclass(frozen=True)
class CameraSummary:
    """What the dashboard, the REST API and `maskwatch stats` show for one camera (`camera_update`)."""

    camera: str
    name: str
    site: str
    zone: str
    status: str = field(metadata=_about("online / reconnecting / offline / unknown, from the producer"))
    last_error: str = field(
        metadata=_about(
            "the producer's last error reading this camera (no such file, connection refused, unauthorized, timeout, "
            "undecodable stream, removed from the site file); empty when none"
        )
    )
    fps: float
    last_frame_ms: int | None
    data_age_s: float | None
    lag: float | None = field(
        metadata=_about("seconds the newest counted frame trails the newest captured one; null before both are known")
    )
    window_minutes: int
    window: Counts
    compliance: float | None = field(metadata=_about("with_mask / people; null with nobody seen"))
    totals: Counts
    persons: Mapping[str, int] = field(
        metadata=_about("unique people in the window (one verdict per tracked person)")
    )
    warnings: tuple[str, ...] = field(metadata=_about(items={"type": "string", "enum": ["faces_too_small"]}))

    def to_json(self) -> dict[str, Any]:
        return {f.name: _encode(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_json(cls, raw: str | bytes | Mapping[str, Any]) -> CameraSummary:
        data = _parsed(raw, "camera summary")
        try:
            return cls(
                **{f.name: data[f.name] for f in fields(cls) if f.name not in ("window", "totals", "persons", "warnings")},
                window=Counts.from_mapping(_object(data["window"], "window")),
                totals=Counts.from_mapping(_object(data["totals"], "totals")),
                persons={k: int(v) for k, v in _object(data["persons"], "persons").items()},
                warnings=tuple(str(w) for w in data["warnings"]),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"camera summary: {e!r}") from None


@dataclass(frozen=True)
class WorkerHeartbeat:
    """A worker's heartbeat (hash `mw:worker:{id}`, TTL 15 s): its state, counters and what it owns."""

    status: str = field(metadata=_about(enum=[WORKER_OK, WORKER_DEGRADED]))
    reason: str = field(metadata=_about("the dependency that is down and why; empty when ok"))
    partitions: tuple[int, ...] = field(metadata=_about("partition numbers it owns (of every topic)"))
    topics: int = field(metadata=_about("how many topics it consumes"))
    fps: float = field(metadata=_about("frames per second over the last 10 s"))
    frames: int = field(metadata=_about("frames handled since it started"))
    batches: int
    model_ms: float = field(metadata=_about("Predict latency, moving average"))
    lag: int = field(metadata=_about("frames behind the high watermark on its partitions"))
    ts_ms: int | None = field(default=None, metadata=_about("when it was written (set by the store)"))

    def to_json(self) -> dict[str, Any]:
        return {f.name: _encode(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> WorkerHeartbeat:
        """From the JSON object or the Redis hash (every value a string)."""
        data = _object(raw, "heartbeat")
        try:
            partitions = data.get("partitions", [])
            ts = data.get("ts_ms")
            return cls(
                status=str(data["status"]),
                reason=str(data.get("reason", "")),
                partitions=tuple(int(p) for p in (json.loads(partitions) if isinstance(partitions, str) else partitions)),
                topics=int(data.get("topics", 0)),
                fps=float(data.get("fps", 0)),
                frames=int(data.get("frames", 0)),
                batches=int(data.get("batches", 0)),
                model_ms=float(data.get("model_ms", 0)),
                lag=int(data.get("lag", 0)),
                ts_ms=None if ts in (None, "") else int(ts),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"heartbeat: {e!r}") from None


def _encode(v: Any) -> Any:
    if isinstance(v, Counts):
        return v.as_dict()
    if isinstance(v, tuple):
        return [_encode(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _encode(x) for k, x in v.items()}
    return v


def counts_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {f: {"type": "integer", "minimum": 0} for f in COUNT_FIELDS}}


_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _type_schema(hint: Any, refs: Mapping[type, str]) -> dict[str, Any]:
    """The JSON schema of a field's type: scalars, `X | None`, tuples as arrays, mappings as objects, and the
    dataclasses named in `refs` by reference."""
    if hint in refs:
        return {"$ref": f"#/components/schemas/{refs[hint]}"}
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and inner[0] in _SCALARS:
            return {"type": [_SCALARS[inner[0]], "null"]}
        return {"anyOf": [_type_schema(a, refs) for a in args]}
    if origin is tuple:
        return {"type": "array", "items": _type_schema(args[0], refs)}
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", **({"additionalProperties": _type_schema(value, refs)} if value is not Any else {})}
    if hint is Any:
        return {}
    raise TypeError(f"no JSON schema for {hint!r}")


def json_schema(cls: type, refs: Mapping[type, str] | None = None, description: str = "") -> dict[str, Any]:
    """The JSON schema of a payload type, from its fields' types and their `metadata["schema"]`."""
    refs = {Counts: "Counts", **(refs or {})}
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required = []
    for f in fields(cls):
        props[f.name] = {**_type_schema(hints[f.name], refs), **f.metadata.get("schema", {})}
        if f.default is MISSING and f.default_factory is MISSING:
            required.append(f.name)
    doc = description or (cls.__doc__ or "").split("\n\n")[0].replace("\n", " ").strip()
    return {"type": "object", "description": doc, "properties": props, "required": required}
