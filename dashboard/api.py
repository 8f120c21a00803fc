"""REST views under /api/ (Contract 4): cameras, one camera's totals and series, violations, alerts, frames, health."""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from dashboard import access
from dashboard.auth import ACCESS_CONFIG, presented
from dashboard.context import dashboard, missing_vendor_files
from dashboard.live import all_summaries, episode_view, scoped, scoped_system, system_state
from maskwatch import history, report
from maskwatch.detections import COUNT_FIELDS
from maskwatch.frames import is_valid_camera_id
from maskwatch.payloads import WINDOWS
from maskwatch.store import CameraStillSent, camera_summary, epoch_minute, remove_camera

bp = Blueprint("api", __name__)

MAX_VIOLATIONS = 500
MAX_ALERTS = 500
# an episode's id names its snapshot: {first_ms}-{ymin*1e4}-{xmin*1e4} (worker/tracker.py Track.key)
SNAPSHOT_ID = re.compile(r"^\d{1,16}(?:--?\d{1,6}){2}$")
CSV_FIELDS = ("minute_start_utc", "ts_ms", *COUNT_FIELDS, "compliance")


class ApiError(HTTPException):
    """An HTTP error whose body is JSON: {"error": ..., **detail}."""

    def __init__(self, code: int, error: str, **detail: Any) -> None:
        super().__init__(description=error)
        self.code = code
        self.error = error
        self.detail = detail


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> tuple[Response, int]:
    return jsonify(error=exc.error, **exc.detail), exc.code or 500


def json_http_error(exc: HTTPException) -> tuple[Response, int]:
    """Any HTTP error under /api/ (404 route, 405, 413...) as JSON."""
    code = exc.code or 500
    return jsonify(error=(exc.name or "error").lower(), detail=exc.description), code


def json_redis_error(exc: redis.RedisError) -> tuple[Response, int]:
    return jsonify(error="redis unavailable", detail=str(exc)), 503


def window_minutes_arg() -> tuple[str, int]:
    """The `?window=` of this request as (label, minutes); the configured window when absent."""
    label = request.args.get("window")
    if label is None:
        minutes = dashboard().settings.window_minutes
        return f"{minutes}m", minutes
    if label not in WINDOWS:
        raise ApiError(400, "bad window", window=label, allowed=list(WINDOWS))
    return label, WINDOWS[label]


def known_camera(cid: str) -> str:
    """`cid` when Redis knows it and the request's token may see it; 404 otherwise (a camera out of scope is
    not told apart from one that does not exist)."""
    store = dashboard().store
    if not is_valid_camera_id(cid) or not store.has_camera(cid):
        raise ApiError(404, "unknown camera", camera=cid)
    who = access.current()
    if who.scoped and not who.sees(cid, store.camera_zones([cid])[cid]):
        raise ApiError(404, "unknown camera", camera=cid)
    return cid


def visible_cameras() -> list[str]:
    """The ids of the cameras the request's token may see."""
    store = dashboard().store
    who = access.current()
    ids = store.camera_ids()
    return ids if not who.scoped else access.visible(store.camera_zones(ids).items(), who)


def visible_zones() -> dict[str, list[str]]:
    """Zone -> cameras, for the zones the request's token sees whole."""
    who = access.current()
    return {z: cams for z, cams in dashboard().store.zones().items() if who.sees_zone(z)}


def series_rows(cid: str, minutes: int, now_ms: int) -> list[dict[str, Any]]:
    """Per-minute counts and compliance for the last `minutes` minutes, oldest first."""
    end = epoch_minute(now_ms)
    rows = []
    for m, c in dashboard().store.series(cid, end - minutes + 1, end):
        comp = c.compliance
        rows.append(
            {"minute": m, "ts_ms": m * 60_000, **c.as_dict(), "compliance": None if comp is None else round(comp, 4)}
        )
    return rows


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Liveness for probes (open even with a token): Redis answers or not, nothing else."""
    try:
        dashboard().store.r.ping()
    except (redis.RedisError, OSError):
        return jsonify(status="degraded"), 503
    return jsonify(status="ok"), 200


@bp.get("/api/health")
def health() -> tuple[Response, int]:
    d = dashboard()
    started = time.monotonic()
    redis_ok = True
    detail: dict[str, Any] = {}
    try:
        d.store.r.ping()
        detail["latency_ms"] = round((time.monotonic() - started) * 1000, 2)
        workers = d.store.heartbeats("worker")
        cameras = len(visible_cameras())
    except (redis.RedisError, OSError) as exc:
        redis_ok = False
        detail["error"] = str(exc)
        workers, cameras = {}, None
    live = d.live.state()
    missing = missing_vendor_files()
    ok = redis_ok and live["running"]
    body = {
        "status": "ok" if ok else "degraded",
        "redis": {"ok": redis_ok, **detail},
        "live": live,
        "cameras": cameras,
        "workers": len(workers),
        "assets": {"ok": not missing, "missing": missing},
    }
    return jsonify(body), 200 if ok else 503


@bp.get("/api/cameras")
def cameras() -> Response:
    _, minutes = window_minutes_arg()
    return jsonify([s.to_json() for s in scoped(all_summaries(dashboard().store, minutes), access.current())])


@bp.get("/api/cameras/<cid>")
def camera(cid: str) -> Response:
    known_camera(cid)
    label, minutes = window_minutes_arg()
    now_ms = int(time.time() * 1000)
    summary = camera_summary(dashboard().store, cid, minutes, now_ms)
    return jsonify({**summary.to_json(), "window_label": label, "series": series_rows(cid, minutes, now_ms)})


@bp.delete("/api/cameras/<cid>")
def remove(cid: str) -> tuple[Response, int]:
    """Retire a camera no producer runs (admin: the dashboard's own token or an admin `access:` token as a Bearer
    header, when tokens are set)."""
    token = current_app.config.get("MW_TOKEN")
    entries = current_app.config.get(ACCESS_CONFIG, ())
    if token is not None or entries:
        how, value = presented(request)
        who = access.by_token(value, token, entries) if how == "bearer" and value is not None else None
        if who is None or not who.is_admin:
            raise ApiError(403, "forbidden", detail="removing a camera needs an admin token as Authorization: Bearer")
    known_camera(cid)
    try:
        retired = remove_camera(dashboard().store, cid)
    except CameraStillSent as e:
        raise ApiError(409, "camera_still_sent", detail=str(e)) from None
    return jsonify({"camera": cid, "retired": True, "was_retired": not retired}), 200


@bp.get("/api/cameras/<cid>/series.csv")
def camera_series_csv(cid: str) -> Response:
    known_camera(cid)
    label, minutes = window_minutes_arg()
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for row in series_rows(cid, minutes, int(time.time() * 1000)):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["ts_ms"] / 1000))
        w.writerow([stamp, *(row[f] if row[f] is not None else "" for f in CSV_FIELDS[1:])])
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{cid}-{label}.csv"'},
    )


@bp.get("/api/cameras/<cid>/latest.jpg")
def latest_jpeg(cid: str) -> Response:
    known_camera(cid)
    jpeg = dashboard().store.latest_jpeg(cid)
    if jpeg is None:
        raise ApiError(404, "no recent frame", camera=cid)
    return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": "no-store"})


def limit_arg(default: int = 50, most: int = MAX_VIOLATIONS) -> int:
    """`?limit=` within 1..most; 400 otherwise."""
    raw = request.args.get("limit")
    try:
        limit = int(raw) if raw is not None else default
    except ValueError:
        raise ApiError(400, "bad limit", limit=raw, allowed=f"1..{most}") from None
    if not 1 <= limit <= most:
        raise ApiError(400, "bad limit", limit=limit, allowed=f"1..{most}")
    return limit


def violation_rows(cid: str, limit: int) -> list[dict[str, Any]]:
    """A camera's newest violation episodes, each with the URL of its best snapshot (or None)."""
    return [episode_view(row) for row in dashboard().store.episodes(cid, limit)]


@bp.get("/api/cameras/<cid>/violations")
def violations(cid: str) -> Response:
    known_camera(cid)
    return jsonify(violation_rows(cid, limit_arg()))


@bp.get("/api/violations")
def recent_violations() -> Response:
    """The newest violation episodes over every camera, newest first."""
    limit = limit_arg(20)
    rows = [v for cid in visible_cameras() for v in violation_rows(cid, limit)]
    rows.sort(key=lambda v: v["ts_ms"], reverse=True)
    return jsonify(rows[:limit])


@bp.get("/api/cameras/<cid>/snapshots/<ident>.jpg")
def snapshot(cid: str, ident: str) -> Response:
    known_camera(cid)
    if not SNAPSHOT_ID.fullmatch(ident):
        raise ApiError(404, "no such snapshot", camera=cid, snapshot=ident)
    store = dashboard().store
    jpeg = store.snapshot(store.keys.snapshot(cid, ident))
    if jpeg is None:
        raise ApiError(404, "no such snapshot", camera=cid, snapshot=ident)
    return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@bp.get("/api/alerts")
def alerts() -> Response:
    """Alerts in progress and the newest starts and ends (one camera's with `?camera=`), newest first."""
    d = dashboard()
    limit = limit_arg(50, MAX_ALERTS)
    cid = request.args.get("camera")
    if cid is not None:
        known_camera(cid)
    active = list(d.store.active_alerts().values())
    if cid is not None:
        active = [a for a in active if a.get("camera") == cid]
    recent = d.store.alerts(limit, cid)
    if access.current().scoped:  # only its cameras' alerts; the site-wide ones cover cameras it may not see
        mine = set(visible_cameras())
        active = [a for a in active if a.get("camera") in mine]
        recent = [a for a in d.store.alerts(MAX_ALERTS, cid) if a.get("camera") in mine][:limit]
    rules = d.site.alerts
    return jsonify(
        {
            "enabled": d.site.alerting,
            "rule": rules.rule_for(None).as_dict() if rules is not None else None,
            "active": active,
            "recent": recent,
        }
    )


@bp.get("/api/system")
def system() -> Response:
    """The latest `system` event (computed now when the emitter has not produced one yet)."""
    d = dashboard()
    who = access.current()
    state = d.live.last_system if not who.scoped else None
    if state is None:
        now_ms = int(time.time() * 1000)
        state = system_state(
            d.store,
            scoped(all_summaries(d.store, d.settings.window_minutes, now_ms), who),
            window_minutes=d.settings.window_minutes,
            stale_after_s=d.settings.stale_after_s,
            throughput_fps=None,
            now_ms=now_ms,
            alerting=d.live.alerts is not None,
        )
    return jsonify(scoped_system(state, who))


# ---- history: any range, at the resolution the range calls for ------------------------------------------

DEFAULT_HISTORY_MS = 7 * 86_400_000


def range_args() -> tuple[int, int]:
    """`?from=&to=` (epoch ms, ISO date or date-time in the site's zone); default: the last 7 days."""
    tz = history.timezone(dashboard().site.timezone)
    now = int(time.time() * 1000)
    try:
        to = history.parse_instant(request.args["to"], tz, end=True) if "to" in request.args else now
        start = history.parse_instant(request.args["from"], tz) if "from" in request.args else to - DEFAULT_HISTORY_MS
    except history.RangeError as exc:
        raise ApiError(400, "bad range", detail=str(exc)) from None
    if to <= start:
        raise ApiError(400, "bad range", detail="`to` must be after `from`")
    return start, to


def resolution_arg(start: int, to: int, zone: bool) -> str:
    raw = request.args.get("resolution")
    if raw is None:
        return history.pick_resolution(start, to, int(time.time() * 1000), dashboard().store.minute_ttl_s, zone)
    if raw not in history.RESOLUTION_MS or (zone and raw == history.MINUTE):
        allowed = [r for r in history.RESOLUTION_MS if not (zone and r == history.MINUTE)]
        raise ApiError(400, "bad resolution", resolution=raw, allowed=allowed)
    return raw


def subject_args() -> tuple[str | None, str | None]:
    """`?camera=` or `?zone=` (not both); neither: the whole site."""
    cid, zone = request.args.get("camera"), request.args.get("zone")
    if cid is not None and zone is not None:
        raise ApiError(400, "camera and zone are exclusive")
    if cid is not None:
        known_camera(cid)
    if zone is not None and zone not in visible_zones():
        raise ApiError(404, "unknown zone", zone=zone)
    return cid, zone


def series_of(start: int, to: int, cid: str | None, zone: str | None, resolution: str) -> history.Series:
    store = dashboard().store
    cameras = [cid] if cid is not None else visible_cameras()
    try:
        return history.series(store, start, to, cameras=cameras, zone=zone, resolution=resolution)
    except history.RangeError as exc:
        raise ApiError(400, "bad range", detail=str(exc)) from None


@bp.get("/api/history")
def history_series() -> Response:
    """Counts per bucket over any range for a camera, a zone or the whole site; the resolution fits the range."""
    start, to = range_args()
    cid, zone = subject_args()
    resolution = resolution_arg(start, to, zone is not None)
    try:
        return jsonify(history.payload(dashboard().store, start, to, cid, zone, resolution))
    except history.RangeError as exc:
        raise ApiError(400, "bad range", detail=str(exc)) from None


@bp.get("/api/history/overview")
def history_overview() -> Response:
    """What the History page draws: compliance per zone and per camera over the range, and hour × weekday."""
    start, to = range_args()
    resolution = resolution_arg(start, to, zone=True)
    store = dashboard().store
    zones = visible_zones()
    cams = visible_cameras()
    per_camera = {cid: series_of(start, to, cid, None, resolution) for cid in cams}
    per_zone = {z: series_of(start, to, None, z, resolution) for z in zones}
    # the heat map folds hours: over a very long range, its last MAX_BUCKETS hours
    hour_from = max(start, to - history.MAX_BUCKETS * history.RESOLUTION_MS[history.HOUR] + 1)
    hourly = series_of(hour_from, to, None, None, history.HOUR) if resolution != history.HOUR else None
    rows = hourly.rows if hourly is not None else _summed(list(per_camera.values()))
    grid = history.heatmap(rows, history.timezone(dashboard().site.timezone))
    ts = [t for t, _ in next(iter(per_camera.values())).rows] if per_camera else []

    def line(s: history.Series) -> dict[str, Any]:
        return {
            "compliance": [history.compliance(c) for _, c in s.rows],
            "faces": [c.people for _, c in s.rows],
            "total": history.counts_row(None, s.total()),
        }

    return jsonify(
        {
            "from_ms": start,
            "to_ms": to,
            "resolution": resolution,
            "timezone": dashboard().site.timezone or "UTC",
            "ts_ms": ts,
            "zones": {z: line(s) for z, s in per_zone.items()},
            "cameras": {cid: {**line(s), "zone": store.camera_info(cid).get("zone", "")} for cid, s in per_camera.items()},
            "heatmap": {
                "weekdays": list(history.WEEKDAYS),
                "compliance": [[history.compliance(c) for c in row] for row in grid],
                "faces": [[c.people for c in row] for row in grid],
            },
        }
    )


def _summed(series: list[history.Series]) -> tuple[tuple[int, Any], ...]:
    if not series:
        return ()
    out = list(series[0].rows)
    for s in series[1:]:
        out = [(t, a + b) for (t, a), (_, b) in zip(out, s.rows, strict=True)]
    return tuple(out)


REPORT_FORMATS = ("html", "csv", "json")


@bp.get("/api/report")
def report_view() -> Response:
    """A compliance report over a range for the site, a zone or a camera: printable HTML, CSV or JSON."""
    start, to = range_args()
    cid, zone = subject_args()
    fmt = request.args.get("format", "html")
    if fmt not in REPORT_FORMATS:
        raise ApiError(400, "bad format", format=fmt, allowed=list(REPORT_FORMATS))
    d = dashboard()
    req = report.ReportRequest(start, to, cid, zone, d.site.timezone, d.site.shifts, d.site.name, visible_cameras())
    try:
        body = report.build(d.store, req, int(time.time() * 1000))
    except history.RangeError as exc:
        raise ApiError(400, "bad range", detail=str(exc)) from None
    name = f"maskwatch-report-{body['subject']['name']}-{time.strftime('%Y%m%d', time.gmtime(start / 1000))}"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    if fmt == "json":
        return jsonify(body)
    if fmt == "csv":
        return Response(
            report.to_csv(body),
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return Response(report.to_html(body, d.store), mimetype="text/html")
