"""HTML pages: the live overview, one camera's page, history, reports, and the upload check page."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template

from dashboard.api import visible_cameras, visible_zones
from dashboard.context import dashboard, missing_vendor_files
from maskwatch.detections import INCORRECT, VIOLATION_CLASSES, WITH_MASK, WITHOUT_MASK
from maskwatch.frames import is_valid_camera_id
from maskwatch.payloads import EVENTS, NAMESPACE, WINDOWS

bp = Blueprint("pages", __name__)

# How the pages show each class, in the order they list them: its label and its swatch (colours in app.css).
CLASS_VIEWS = {WITH_MASK: ("mask", "with"), INCORRECT: ("mask worn incorrectly", "incorrect"), WITHOUT_MASK: ("no mask", "without")}
# The windows a camera's per-minute chart offers (a one-minute chart would be one bar).
CHART_WINDOWS = ("15m", "1h", "24h")


def window_text(minutes: int) -> str:
    return f"{minutes // 60} h" if minutes >= 60 and minutes % 60 == 0 else f"{minutes} min"


def page_names() -> dict[str, Any]:
    """The names the pages' scripts use, from the modules that own them (rendered as JSON into every page): the
    live namespace and event names, the windows, and the classes (count field, label, swatch, violation or not)."""
    return {
        "namespace": NAMESPACE,
        "events": EVENTS,
        "windows": WINDOWS,
        "classes": [
            {"field": c, "label": label, "swatch": swatch, "violation": c in VIOLATION_CLASSES}
            for c, (label, swatch) in CLASS_VIEWS.items()
        ],
    }


def page_config() -> dict[str, Any]:
    """What the browser code needs to know, rendered into the page as data-* attributes."""
    d = dashboard()
    s, site = d.settings, d.site
    rule = site.alerts.rule_for(None) if site.alerts is not None else None
    return {
        "window_minutes": s.window_minutes,
        # the headline's window as a `?window=` label ('' = not one of them: the API's default is the headline's)
        "window_label": next((k for k, v in WINDOWS.items() if v == s.window_minutes), ""),
        "chart_windows": [(label, window_text(WINDOWS[label])) for label in CHART_WINDOWS],
        "names": page_names(),
        "good": s.good_threshold,
        "warn": s.warn_threshold,
        "stale_after_s": s.stale_after_s,
        "site": site.name,
        "timezone": site.timezone,  # "" = the browser's own
        "alerting": site.alerting,
        "alert_rule": (
            f"below {rule.compliance_below * 100:g}% for {rule.for_s:g} s with at least {rule.min_people} people"
            if rule is not None
            else ""
        ),
    }


@bp.get("/")
def index() -> str:
    return render_template("index.html", cfg=page_config(), missing_assets=missing_vendor_files())


@bp.get("/cameras/<cid>")
def camera(cid: str) -> str:
    if not is_valid_camera_id(cid) or cid not in visible_cameras():
        abort(404)
    return render_template("camera.html", cfg=page_config(), cid=cid, missing_assets=missing_vendor_files())


@bp.get("/history")
def history() -> str:
    return render_template("history.html", cfg=page_config(), missing_assets=missing_vendor_files())


@bp.get("/report")
def report() -> str:
    d = dashboard()
    return render_template(
        "report.html",
        cfg=page_config(),
        missing_assets=missing_vendor_files(),
        zones=list(visible_zones()),
        cameras=visible_cameras(),
        shifts=d.site.shifts,
    )


@bp.get("/check")
def check() -> str:
    return render_template(
        "check.html", cfg=page_config(), missing_assets=missing_vendor_files(), min_score=dashboard().settings.min_score
    )
