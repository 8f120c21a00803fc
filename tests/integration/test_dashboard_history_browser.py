"""The History page in a real headless Chromium: a date range, zone and camera lines, the hour × weekday map."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from playwright.sync_api import Page, expect

from tests.integration.dashboard_fixtures import (  # noqa: F401  (fixture_* are fixtures)
    ServedDashboard,
    fixture_dashboard_serve,
    fixture_dashboard_served,
    fixture_dashboard_store,
    seed,
)
from tests.integration.test_dashboard_browser import ARTIFACTS, browser, only_local, page  # noqa: F401

pytestmark = pytest.mark.browser
D = 86_400_000


@pytest.mark.timeout(60)
def test_history_page_shows_zones_cameras_and_hours(page: Page, dashboard_served: ServedDashboard) -> None:  # noqa: F811
    store = dashboard_served.store
    now = int(time.time() * 1000)
    for days_ago in (0, 2, 20):
        ts = now - days_ago * D
        seed(store, "ward-1", with_mask=4, ts_ms=ts, jpeg=None, zone="Ward A", name="Ward 1")
        seed(store, "gate-1", with_mask=1, without_mask=3, ts_ms=ts, jpeg=None, zone="Gate", name="Gate 1")
    outside = only_local(page, dashboard_served.url)
    today = dt.datetime.fromtimestamp(now / 1000, dt.UTC)
    start = (today - dt.timedelta(days=29)).date().isoformat()
    page.goto(f"{dashboard_served.url}/history?from={start}&to={today.date().isoformat()}")
    expect(page.get_by_test_id("range-note")).to_contain_text("hour buckets")
    expect(page.get_by_test_id("zone-chart")).to_have_attribute("data-lines", "2")
    expect(page.get_by_test_id("camera-chart")).to_have_attribute("data-lines", "2")
    expect(page.locator("#camera-rows tr")).to_have_count(2)
    expect(page.locator("#camera-rows tr", has_text="gate-1")).to_contain_text("25%")
    expect(page.locator("#camera-rows tr", has_text="ward-1")).to_contain_text("100%")
    # now's weekday and hour (UTC: no site file) holds today's faces: 4 + 4, a quarter of them masked... and more
    cell = page.locator("#heatmap tr").nth(today.weekday() + 1).locator("td").nth(today.hour)
    expect(cell).to_have_attribute("data-faces", "8")
    expect(cell).to_have_text("63")  # (4 + 1) of 8 faces masked
    # a shorter range: the page asks again and the lines follow
    page.fill("#from", today.date().isoformat())
    page.click("#show")
    expect(page.locator("#camera-rows tr", has_text="gate-1")).to_contain_text("25%")
    expect(page).to_have_url(f"{dashboard_served.url}/history?from={today.date().isoformat()}&to={today.date().isoformat()}")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-history.png"), full_page=True, animations="disabled")
    assert outside == []
