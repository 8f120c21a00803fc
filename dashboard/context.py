"""The collaborators one dashboard app was built with, reached by views through `current_app`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app

from dashboard.live import LiveEmitter
from dashboard.settings import DashboardSettings
from dashboard.site import SiteView
from maskwatch.store import Store

EXTENSION = "maskwatch"
PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
VENDOR_MANIFEST = PACKAGE_DIR / "vendor.json"


@dataclass(frozen=True)
class Dashboard:
    settings: DashboardSettings
    store: Store
    live: LiveEmitter
    site: SiteView


def dashboard(app: Flask | None = None) -> Dashboard:
    """The Dashboard of `app` (default: the app handling the current request)."""
    ext: Dashboard = (app or current_app).extensions[EXTENSION]
    return ext


def missing_vendor_files() -> list[str]:
    """Browser libraries named in vendor.json that `npm ci --prefix dashboard` has not copied to static/vendor."""
    names = json.loads(VENDOR_MANIFEST.read_text())
    return sorted(n for n in names if not (VENDOR_DIR / n).is_file())
