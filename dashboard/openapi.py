"""The REST API described as OpenAPI 3.1, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from maskwatch.payloads import WINDOWS, CameraSummary, WorkerHeartbeat, counts_schema, json_schema

bp = Blueprint("openapi", __name__)


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = {"$ref": "#/components/schemas/Error"}
CAMERA = {"name": "camera", "in": "path", "required": True, "schema": {"type": "string"}, "description": "camera id"}
WINDOW = {
    "name": "window",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": list(WINDOWS)},
    "description": "window of per-minute buckets; default: the dashboard's window_minutes",
}
RANGE = [
    {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": f"{what}: epoch ms, an ISO date (a `to` date includes that day) or date-time, in the site's "
        "time zone unless it says otherwise",
    }
    for name, what in (("from", "start (default: 7 days before `to`)"), ("to", "end (default: now)"))
]
SUBJECT_CAMERA = {"name": "camera", "in": "query", "schema": {"type": "string"}, "description": "one camera"}
SUBJECT_ZONE = {"name": "zone", "in": "query", "schema": {"type": "string"}, "description": "one zone (not with camera)"}
RESOLUTION = {
    "name": "resolution",
    "in": "query",
    "schema": {"type": "string", "enum": ["minute", "hour", "day"]},
    "description": "default: the one the range calls for",
}
NOT_FOUND = _json(ERROR, "unknown camera")
BAD_WINDOW = _json(ERROR, "bad window")


def spec() -> dict[str, Any]:
    summary = json_schema(CameraSummary, description="Contract 4 camera_update payload (maskwatch.payloads.CameraSummary)")
    minute = {
        "allOf": [
            {"$ref": "#/components/schemas/Counts"},
            {
                "type": "object",
                "properties": {
                    "minute": {"type": "integer", "description": "epoch minute"},
                    "ts_ms": {"type": "integer"},
                    "compliance": {"type": ["number", "null"]},
                },
            },
        ]
    }
    violation = {
        "type": "object",
        "description": "A violation episode: one tracked person judged unmasked or wrongly masked "
        "(the `violation` event carries the same object when the episode opens, changes and closes)",
        "properties": {
            "id": {"type": "string", "description": "episode id, also its snapshot's name"},
            "camera": {"type": "string"},
            "class": {"type": "string", "enum": ["without_mask", "mask_worn_incorrectly"]},
            "state": {"type": "string", "enum": ["open", "closed"]},
            "ts_ms": {"type": "integer", "description": "first seen (the same as first_ms)"},
            "first_ms": {"type": "integer"},
            "last_ms": {"type": "integer"},
            "duration_s": {"type": "number"},
            "votes": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "frames per class"},
            "score": {"type": "number", "description": "the highest detection score of the episode's class"},
            "box": {"type": "array", "items": {"type": "number"}, "description": "last box: ymin, xmin, ymax, xmax (0..1)"},
            "snapshot_url": {"type": ["string", "null"], "description": "the episode's largest, sharpest face"},
            "snapshot_ms": {"type": ["integer", "null"], "description": "when that face was seen"},
        },
    }
    alert = {
        "type": "object",
        "description": "An alert start or end (Socket.IO `alert`, the webhook's JSON body, an entry of mw:alerts)",
        "properties": {
            "id": {"type": "string", "description": "mw:alerts stream entry id"},
            "alert_id": {"type": "string", "description": "subject@started_ms, the same for a start and its end"},
            "state": {"type": "string", "enum": ["start", "end"]},
            "scope": {"type": "string", "enum": ["camera", "site"]},
            "camera": {"type": ["string", "null"]},
            "name": {"type": "string"},
            "zone": {"type": "string"},
            "site": {"type": "string"},
            "compliance": {"type": ["number", "null"]},
            "people": {"type": "integer"},
            "window_minutes": {"type": "integer"},
            "compliance_below": {"type": "number"},
            "clear_above": {"type": "number"},
            "for_s": {"type": "number"},
            "clear_for_s": {"type": "number"},
            "min_people": {"type": "integer"},
            "reason": {
                "type": "string",
                "enum": ["below_threshold", "recovered", "too_few_people", "disabled"],
            },
            "started_ms": {"type": "integer"},
            "ts_ms": {"type": "integer"},
            "ended_ms": {"type": "integer"},
            "duration_s": {"type": "number"},
            "text": {"type": "string", "description": "one line for people (chat webhooks show it)"},
        },
    }
    jpeg = {"description": "JPEG", "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "MaskWatch dashboard API",
            "version": "1",
            "description": "Read-only views over MaskWatch's Redis data, plus a one-off image check. "
            "When the dashboard has a token, send `Authorization: Bearer <token>` (or `?token=`). "
            "A browser request from an origin other than the dashboard's own and MW_DASHBOARD_CORS_ORIGINS gets 403.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Counts": counts_schema(),
                "Summary": summary,
                "Heartbeat": json_schema(WorkerHeartbeat),
                "Minute": minute,
                "Violation": violation,
                "Alert": alert,
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
            },
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            "/api/cameras": {
                "get": {
                    "summary": "Every camera's live summary",
                    "parameters": [WINDOW],
                    "responses": {
                        "200": _json({"type": "array", "items": {"$ref": "#/components/schemas/Summary"}}),
                        "400": BAD_WINDOW,
                    },
                }
            },
            "/api/cameras/{camera}": {
                "get": {
                    "summary": "One camera: summary, totals and the per-minute series of a window",
                    "parameters": [CAMERA, WINDOW],
                    "responses": {
                        "200": _json(
                            {
                                "allOf": [
                                    {"$ref": "#/components/schemas/Summary"},
                                    {
                                        "type": "object",
                                        "properties": {
                                            "window_label": {"type": "string"},
                                            "series": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Minute"},
                                            },
                                        },
                                    },
                                ]
                            }
                        ),
                        "400": BAD_WINDOW,
                        "404": NOT_FOUND,
                    },
                },
                "delete": {
                    "summary": "Retire a camera no producer runs: it leaves /api/cameras, the overview and the site's "
                    "figures; its history stays here by id. Needs the dashboard token as a Bearer header when one is set",
                    "parameters": [CAMERA],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "camera": {"type": "string"},
                                    "retired": {"type": "boolean"},
                                    "was_retired": {"type": "boolean"},
                                },
                            }
                        ),
                        "403": _json(ERROR, "a token is set and the request did not present it as a Bearer header"),
                        "404": NOT_FOUND,
                        "409": _json(ERROR, "a running producer still sends this camera: remove it from the site file"),
                    },
                },
            },
            "/api/cameras/{camera}/series.csv": {
                "get": {
                    "summary": "The per-minute series as CSV",
                    "parameters": [CAMERA, WINDOW],
                    "responses": {
                        "200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
                        "400": BAD_WINDOW,
                        "404": NOT_FOUND,
                    },
                }
            },
            "/api/cameras/{camera}/latest.jpg": {
                "get": {
                    "summary": "The latest annotated frame (kept for two minutes)",
                    "parameters": [CAMERA],
                    "responses": {"200": jpeg, "404": _json(ERROR, "unknown camera or no recent frame")},
                }
            },
            "/api/cameras/{camera}/violations": {
                "get": {
                    "summary": "Recent violation episodes (one per person), newest first",
                    "parameters": [
                        CAMERA,
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    ],
                    "responses": {
                        "200": _json({"type": "array", "items": {"$ref": "#/components/schemas/Violation"}}),
                        "400": _json(ERROR, "bad limit"),
                        "404": NOT_FOUND,
                    },
                }
            },
            "/api/cameras/{camera}/snapshots/{snapshot}.jpg": {
                "get": {
                    "summary": "The best face crop of a violation episode",
                    "parameters": [
                        CAMERA,
                        {"name": "snapshot", "in": "path", "required": True, "schema": {"type": "string"}},
                    ],
                    "responses": {"200": jpeg, "404": _json(ERROR)},
                }
            },
            "/api/violations": {
                "get": {
                    "summary": "The newest violation episodes over every camera, newest first",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    ],
                    "responses": {
                        "200": _json({"type": "array", "items": {"$ref": "#/components/schemas/Violation"}}),
                        "400": _json(ERROR, "bad limit"),
                    },
                }
            },
            "/api/alerts": {
                "get": {
                    "summary": "Alerts in progress, and the newest alert starts and ends (newest first)",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                        {
                            "name": "camera",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "only this camera's alerts",
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "enabled": {
                                        "type": "boolean",
                                        "description": "false: the site file has no `alerts:`",
                                    },
                                    "rule": {"type": ["object", "null"], "description": "the site-wide rule"},
                                    "active": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
                                    "recent": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
                                },
                            }
                        ),
                        "400": _json(ERROR, "bad limit"),
                        "404": NOT_FOUND,
                    },
                }
            },
            "/api/history": {
                "get": {
                    "summary": "Counts per bucket over any range, for a camera, a zone or the whole site",
                    "description": "The resolution fits the range: minutes up to 6 hours (while kept), hours up to "
                    "62 days, else days; zones keep hours and days. Buckets overlapping the range are counted whole.",
                    "parameters": [*RANGE, SUBJECT_CAMERA, SUBJECT_ZONE, RESOLUTION],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "from_ms": {"type": "integer"},
                                    "to_ms": {"type": "integer"},
                                    "resolution": {"type": "string", "enum": ["minute", "hour", "day"]},
                                    "camera": {"type": ["string", "null"]},
                                    "zone": {"type": ["string", "null"]},
                                    "total": {"$ref": "#/components/schemas/Counts"},
                                    "series": {"type": "array", "items": {"$ref": "#/components/schemas/Minute"}},
                                },
                            }
                        ),
                        "400": _json(ERROR, "bad range, bad resolution, camera and zone together"),
                        "404": _json(ERROR, "unknown camera or zone"),
                    },
                }
            },
            "/api/history/overview": {
                "get": {
                    "summary": "The History page: compliance per zone and per camera over a range, and hour × weekday",
                    "parameters": [*RANGE],
                    "responses": {"200": _json({"type": "object"}), "400": _json(ERROR, "bad range")},
                }
            },
            "/api/report": {
                "get": {
                    "summary": "A compliance report over a range (site, zone or camera): figures, cameras, shifts, "
                    "worst hours, violation episodes with snapshots",
                    "parameters": [
                        *RANGE,
                        SUBJECT_CAMERA,
                        SUBJECT_ZONE,
                        {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["html", "csv", "json"]}},
                    ],
                    "responses": {
                        "200": {
                            "description": "the report: printable HTML (default), CSV or JSON",
                            "content": {
                                "text/html": {"schema": {"type": "string"}},
                                "text/csv": {"schema": {"type": "string"}},
                                "application/json": {"schema": {"type": "object"}},
                            },
                        },
                        "400": _json(ERROR, "bad range, bad format, camera and zone together"),
                        "404": _json(ERROR, "unknown camera or zone"),
                    },
                }
            },
            "/api/system": {
                "get": {
                    "summary": "The latest `system` event: workers, producers, site totals, throughput",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "people": {"type": "integer", "description": "different people in the window"},
                                    "face_verdicts": {
                                        "type": "integer",
                                        "description": "faces judged in the window (every face of every frame)",
                                    },
                                    "compliance": {"type": ["number", "null"]},
                                    "lag": {"type": ["integer", "null"], "description": "frames not yet consumed"},
                                    "window": {"$ref": "#/components/schemas/Counts"},
                                    "workers": {
                                        "type": "array",
                                        "items": {
                                            "allOf": [
                                                {"$ref": "#/components/schemas/Heartbeat"},
                                                {
                                                    "type": "object",
                                                    "properties": {
                                                        "id": {"type": "string"},
                                                        "age_s": {"type": ["number", "null"]},
                                                    },
                                                },
                                            ]
                                        },
                                    },
                                },
                            }
                        )
                    },
                }
            },
            "/api/health": {
                "get": {
                    "summary": "Redis, live emitter and browser assets",
                    "responses": {"200": _json({"type": "object"}), "503": _json({"type": "object"}, "degraded")},
                }
            },
            "/api/predict": {
                "post": {
                    "summary": "Run the model on one uploaded image (nothing is stored)",
                    "parameters": [
                        {"name": "min_score", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 1}},
                        {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "jpeg"]}},
                    ],
                    "requestBody": {
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"image": {"type": "string", "format": "binary"}},
                                }
                            },
                            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                        }
                    },
                    "responses": {
                        "200": _json({"type": "object"}),
                        "400": _json(ERROR, "no image, not an image, bad min_score"),
                        "413": _json(ERROR, "image too large (bytes or pixels)"),
                        "415": _json(ERROR, "not a JPEG or PNG"),
                        "502": _json(ERROR, "model output malformed"),
                        "503": _json(ERROR, "model server unavailable"),
                        "504": _json(ERROR, "model server deadline exceeded"),
                    },
                }
            },
        },
    }


@bp.get("/api/openapi.json")
def openapi() -> Response:
    return jsonify(spec())
