"""Compliance reports over a range (site, zone or camera): figures, shifts, worst hours, episodes; CSV and printable HTML."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from maskwatch import history
from maskwatch.detections import Counts
from maskwatch.site import Shift
from maskwatch.store import Store

# the most episodes a report lists (with their snapshots); the count covers them all
MAX_EPISODES = 200
WORST_HOURS = 5
# an hour needs this many faces to rank among the worst (one unmasked passer-by is not a bad hour)
WORST_HOUR_MIN_FACES = 5
CSV_FIELDS = (
    "section", "subject", "start", "end", "compliance", "faces", "with_mask", "without_mask",
    "mask_worn_incorrectly", "people", "episodes", "class", "duration_s",
)  # fmt: skip
_TEMPLATE = Path(__file__).with_name("report.html")


@dataclass(frozen=True)
class ReportRequest:
    """What to report on: a range, and a camera, a zone or (neither) the whole site."""

    from_ms: int
    to_ms: int
    camera: str | None = None
    zone: str | None = None
    timezone: str = ""
    shifts: Sequence[Shift] = ()
    site: str = ""
    # the cameras the asker may see (None: every camera)
    visible: Sequence[str] | None = None


def _figures(c: Counts, episodes: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "compliance": history.compliance(c),
        "faces": c.people,
        "with_mask": c.with_mask,
        "without_mask": c.without_mask,
        "mask_worn_incorrectly": c.mask_worn_incorrectly,
        "people": c.persons,
    }
    if episodes is not None:
        out["episodes"] = episodes
    return out


def shift_totals(rows: Sequence[tuple[int, Counts]], shifts: Sequence[Shift], tz: dt.tzinfo) -> list[dict[str, Any]]:
    """Hourly counts summed per shift: an hour belongs to the shift its local start time falls in."""
    out = []
    for s in shifts:
        total = Counts()
        for start_ms, c in rows:
            local = dt.datetime.fromtimestamp(start_ms / 1000, tz)
            if s.covers(local.hour * 60 + local.minute):
                total = total + c
        out.append({"name": s.name, "start": s.start, "end": s.end, **_figures(total)})
    return out


def worst_hours(rows: Sequence[tuple[int, Counts]], n: int = WORST_HOURS) -> list[dict[str, Any]]:
    """The `n` hours with the lowest compliance among those with at least WORST_HOUR_MIN_FACES faces."""
    ranked = sorted(
        ((c.compliance or 0.0, -c.people, ts, c) for ts, c in rows if c.people >= WORST_HOUR_MIN_FACES),
        key=lambda t: (t[0], t[1], t[2]),
    )
    return [{"ts_ms": ts, **_figures(c)} for _, _, ts, c in ranked[:n]]


def build(store: Store, req: ReportRequest, now_ms: int) -> dict[str, Any]:
    """The report's figures (what CSV and HTML render); RangeError for a range it cannot cover."""
    tz = history.timezone(req.timezone)
    if req.camera is not None:
        cameras = [req.camera]
    elif req.zone is not None:
        cameras = store.zones().get(req.zone, [])
    else:
        cameras = store.camera_ids()
    if req.visible is not None:
        cameras = [c for c in cameras if c in set(req.visible)]
    # every figure from hourly buckets, so the cameras, shifts and worst hours add up to the total
    per_camera = {
        cid: history.series(store, req.from_ms, req.to_ms, cameras=[cid], resolution=history.HOUR) for cid in cameras
    }
    if req.zone is not None:
        hourly = history.series(store, req.from_ms, req.to_ms, zone=req.zone, resolution=history.HOUR).rows
    else:
        hourly = _sum_rows([s.rows for s in per_camera.values()], req.from_ms, req.to_ms)
    cams = []
    episodes: list[dict[str, Any]] = []
    n_episodes = 0
    for cid in cameras:
        n = store.episode_counts(cid, req.from_ms, req.to_ms - 1)
        n_episodes += n
        info = store.camera_info(cid)
        figures = _figures(per_camera[cid].total(), n)
        cams.append({"camera": cid, "name": info.get("name", cid), "zone": info.get("zone", ""), **figures})
        episodes += store.episodes(cid, MAX_EPISODES, req.from_ms, req.to_ms - 1, now_ms)
    episodes.sort(key=lambda e: e["first_ms"])
    total = Counts()
    for _, c in hourly:
        total = total + c
    # the period of the same length just before: "this week against last"
    span = req.to_ms - req.from_ms
    prev_from, prev_to = req.from_ms - span, req.from_ms
    prev_res = history.HOUR if span <= history.MAX_BUCKETS * history.RESOLUTION_MS[history.HOUR] else history.DAY
    prev = history.series(store, prev_from, prev_to, cameras=cameras, zone=req.zone, resolution=prev_res).total()
    prev_episodes = sum(store.episode_counts(cid, prev_from, prev_to - 1) for cid in cameras)
    previous = {"from_ms": prev_from, "to_ms": prev_to, **_figures(prev, prev_episodes)}
    now_c, prev_c = history.compliance(total), history.compliance(prev)
    previous["change_points"] = None if now_c is None or prev_c is None else round(100 * (now_c - prev_c), 1)
    by_class: dict[str, int] = {}
    for e in episodes:
        by_class[e["class"]] = by_class.get(e["class"], 0) + 1
    subject = (
        {"kind": "camera", "name": req.camera}
        if req.camera is not None
        else {"kind": "zone", "name": req.zone}
        if req.zone is not None
        else {"kind": "site", "name": req.site or "whole site"}
    )
    return {
        "site": req.site,
        "subject": subject,
        "from_ms": req.from_ms,
        "to_ms": req.to_ms,
        "timezone": req.timezone or "UTC",
        "generated_ms": now_ms,
        "totals": _figures(total, n_episodes),
        "previous": previous,
        "cameras": cams,
        "shifts": shift_totals(hourly, req.shifts, tz),
        "worst_hours": worst_hours(hourly),
        "episodes": episodes[-MAX_EPISODES:],
        "episodes_listed_by_class": by_class,
    }


def _sum_rows(series: list[tuple[tuple[int, Counts], ...]], from_ms: int, to_ms: int) -> tuple[tuple[int, Counts], ...]:
    """Bucket-wise sum of several cameras' hourly rows (all over the same range)."""
    if not series:
        return tuple((i * 3_600_000, Counts()) for i in history.bucket_indexes(from_ms, to_ms, history.HOUR))
    out = list(series[0])
    for rows in series[1:]:
        out = [(t, a + b) for (t, a), (_, b) in zip(out, rows, strict=True)]
    return tuple(out)


def _stamp(ms: int | None, tz: dt.tzinfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return "" if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz).strftime(fmt)


def to_csv(report: dict[str, Any]) -> str:
    """One table: the total, each camera, each shift, the worst hours, then each listed episode."""
    tz = history.timezone(report["timezone"])
    out = io.StringIO()
    w = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    span = {"start": _stamp(report["from_ms"], tz), "end": _stamp(report["to_ms"], tz)}
    w.writerow({"section": "total", "subject": report["subject"]["name"], **span, **report["totals"]})
    prev = report["previous"]
    w.writerow(
        {
            "section": "previous_period",
            "subject": report["subject"]["name"],
            "start": _stamp(prev["from_ms"], tz),
            "end": _stamp(prev["to_ms"], tz),
            **_no_span(prev),
        }
    )
    for c in report["cameras"]:
        w.writerow({"section": "camera", "subject": c["camera"], **span, **c})
    for s in report["shifts"]:
        w.writerow({"section": "shift", "subject": s["name"], "start": s["start"], "end": s["end"], **_no_span(s)})
    for h in report["worst_hours"]:
        w.writerow({"section": "worst_hour", "subject": report["subject"]["name"], **_hour_span(h["ts_ms"], tz), **h})
    for e in report["episodes"]:
        w.writerow(
            {
                "section": "episode",
                "subject": e["camera"],
                "start": _stamp(e["first_ms"], tz, "%Y-%m-%d %H:%M:%S"),
                "end": _stamp(e["last_ms"], tz, "%Y-%m-%d %H:%M:%S"),
                "class": e["class"],
                "duration_s": e["duration_s"],
            }
        )
    return out.getvalue()


def _no_span(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("name", "start", "end", "from_ms", "to_ms", "change_points")}


def _hour_span(ts_ms: int, tz: dt.tzinfo) -> dict[str, str]:
    return {"start": _stamp(ts_ms, tz), "end": _stamp(ts_ms + 3_600_000, tz)}


def to_html(report: dict[str, Any], store: Store) -> str:
    """A self-contained printable page (styles inline, snapshots as data: URIs), the same from the API and CLI."""
    tz = history.timezone(report["timezone"])
    snaps: dict[str, str] = {}
    for e in report["episodes"]:
        jpeg = store.snapshot(e["snapshot"]) if e.get("snapshot") else None
        if jpeg is not None:
            snaps[f"{e['camera']}|{e['id']}"] = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["pct"] = lambda v: "—" if v is None else f"{100 * v:.1f}%"
    env.filters["when"] = lambda ms, fmt="%Y-%m-%d %H:%M": _stamp(ms, tz, fmt)
    return env.from_string(_TEMPLATE.read_text(encoding="utf-8")).render(r=report, snaps=snaps)
