"""What a person sees: the dashboard, served by `python -m dashboard` (the production server), in a real headless
Chromium, updated live from Redis."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import cv2
import pytest
import skimage.data
from playwright.sync_api import Browser, Page, expect, sync_playwright

from maskwatch.store import Store
from tests.integration.dashboard_fixtures import (  # noqa: F401  (fixture_* are fixtures)
    DashboardProcess,
    fixture_dashboard_store,
    fixture_production_serve,
    fixture_production_served,
    scene_jpeg,
    seed,
)

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
    p = ctx.new_page()
    p.set_default_timeout(10_000)
    yield p
    ctx.close()


def only_local(page: Page, base_url: str) -> list[str]:
    """Record every request that leaves the dashboard's origin (there must be none)."""
    origin = urlsplit(base_url).netloc
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if urlsplit(r.url).netloc not in (origin, "") else None)
    return outside


def card(page: Page, cid: str):  # type: ignore[no-untyped-def]
    return page.locator(f'[data-testid="camera-card"][data-camera="{cid}"]')


def seed_site(store: Store) -> None:
    seed(
        store,
        "gate-1",
        with_mask=9,
        without_mask=1,
        name="Main gate",
        zone="Entrance",
        status="online",
        fps=5,
        jpeg=scene_jpeg(1),
    )
    seed(
        store,
        "hall-2",
        with_mask=14,
        without_mask=4,
        incorrect=2,
        name="Assembly hall",
        zone="Production",
        status="online",
        fps=4.8,
        jpeg=scene_jpeg(2),
        small_faces=True,
    )
    seed(
        store, "dock-3", with_mask=0, name="Loading dock", zone="Logistics", status="online", fps=5, jpeg=scene_jpeg(3)
    )
    seed(
        store,
        "lab-4",
        with_mask=31,
        incorrect=1,
        name="Clean lab",
        zone="Production",
        status="reconnecting",
        fps=2.5,
        jpeg=scene_jpeg(4),
        violations=1,
    )
    seed(
        store,
        "canteen-5",
        with_mask=5,
        without_mask=1,
        name="Canteen",
        zone="Entrance",
        status="offline",
        last_error="cannot open rtsp://canteen.local/1: connection refused by canteen.local:554",
        fps=0,
        ts_ms=None,
        jpeg=None,
    )


@pytest.mark.timeout(90)
def test_cards_show_compliance_and_follow_new_counts_live(page: Page, dashboard_served: DashboardProcess) -> None:
    store = dashboard_served.store
    store.heartbeat("worker", "worker-1", {"fps": 14.6, "lag": 3})
    seed_site(store)
    outside = only_local(page, dashboard_served.url)

    page.goto(dashboard_served.url + "/")
    gate = card(page, "gate-1")
    expect(gate.get_by_test_id("compliance")).to_have_text("90%")
    expect(gate.get_by_test_id("status")).to_have_text("online")
    expect(gate).to_have_class(re.compile(r"\bgood\b"))
    expect(card(page, "dock-3").get_by_test_id("compliance")).to_have_text("No people in the window")
    expect(card(page, "dock-3").get_by_test_id("status")).to_have_text("no people")
    expect(card(page, "lab-4").get_by_test_id("status")).to_have_text("reconnecting")
    expect(card(page, "canteen-5").get_by_test_id("status")).to_have_text("offline")
    expect(card(page, "canteen-5").get_by_test_id("camera-error")).to_have_text(
        "cannot open rtsp://canteen.local/1: connection refused by canteen.local:554"
    )
    expect(gate.get_by_test_id("camera-error")).to_be_hidden()
    expect(card(page, "hall-2").get_by_test_id("warning")).to_contain_text("Faces too small")
    expect(gate.get_by_test_id("warning")).to_be_hidden()
    expect(gate.locator('[data-field="people"]')).to_have_text("10")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    # worst compliance first, cameras without people last
    expect(page.get_by_test_id("camera-card").first).to_have_attribute("data-camera", "hall-2")
    expect(page.get_by_test_id("camera-card").last).to_have_attribute("data-camera", "dock-3")
    expect(gate.locator("img")).not_to_have_attribute("data-missing", "")
    expect(page.get_by_test_id("site-compliance")).to_have_text("86.8%")  # 59 masked of 68 faces

    # new counts arrive: the card changes without a reload
    seed(store, "gate-1", without_mask=10)
    expect(gate.get_by_test_id("compliance")).to_have_text("45%")
    expect(gate).to_have_class(re.compile(r"\bbad\b"))
    expect(page.get_by_test_id("camera-card").first).to_have_attribute("data-camera", "gate-1")
    seed(store, "gate-1", with_mask=3, violations=1)
    expect(gate.get_by_test_id("compliance")).to_have_text("52.2%")
    expect(page.locator("#violations li").first).to_contain_text("Main gate")
    expect(page.get_by_test_id("site-compliance")).to_have_text("76.5%")  # 62 masked of 81 faces

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True, animations="disabled")

    # zone filter
    page.locator('.chip[data-zone="Production"]').click()
    expect(page.get_by_test_id("camera-card")).to_have_count(2)
    expect(gate).to_have_count(0)
    expect(page.get_by_test_id("site-compliance")).to_have_text("86.5%")  # 45 masked of 52 faces in Production
    page.locator('.chip[data-zone=""]').click()
    expect(page.get_by_test_id("camera-card")).to_have_count(5)
    # a retired camera's card goes without a reload, and the site's figure no longer counts it
    store.retire_cameras(["canteen-5"])
    expect(page.get_by_test_id("camera-card")).to_have_count(4)
    expect(card(page, "canteen-5")).to_have_count(0)
    expect(page.get_by_test_id("site-compliance")).to_have_text("76%")  # 57 masked of 75 faces (was 62 of 81)
    assert outside == [], f"the page reached outside the dashboard: {outside}"


@pytest.mark.timeout(60)
def test_empty_site_says_how_to_start(page: Page, dashboard_served: DashboardProcess) -> None:
    page.goto(dashboard_served.url + "/")
    expect(page.get_by_text("No cameras yet — start a producer")).to_be_visible()
    expect(page.get_by_test_id("alerts-empty")).to_contain_text("Alerts are off: add an alerts: section")
    expect(page.get_by_test_id("site-tag")).to_have_text("browser time zone")  # no site file
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-empty.png"), full_page=True, animations="disabled")
    seed(dashboard_served.store, "first-cam", with_mask=1, name="First camera")
    expect(card(page, "first-cam").get_by_test_id("compliance")).to_have_text("100%")
    expect(page.get_by_text("No cameras yet — start a producer")).to_be_hidden()
    expect(page.get_by_test_id("site-note")).to_contain_text("No worker is counting frames")
    page.screenshot(path=str(ARTIFACTS / "dashboard-no-worker.png"), full_page=True, animations="disabled")
    dashboard_served.store.heartbeat("worker", "worker-1", {"fps": 1.0})
    expect(page.get_by_test_id("site-note")).to_be_hidden()


@pytest.mark.timeout(60)
def test_camera_page_charts_minutes_and_updates(page: Page, dashboard_served: DashboardProcess) -> None:
    store = dashboard_served.store
    now = int(time.time() * 1000)
    for minutes_ago in range(50, 0, -1):  # an hour's history, outside the 15-minute live window for most of it
        faces = 6 + (minutes_ago * 7) % 9
        bad = (minutes_ago * 5) % 4 if minutes_ago > 20 else (minutes_ago % 3 == 0)
        seed(store, "gate-1", with_mask=faces - bad, without_mask=bad, ts_ms=now - minutes_ago * 60_000, jpeg=None)
    seed_site(store)
    outside = only_local(page, dashboard_served.url)
    page.goto(dashboard_served.url + "/cameras/gate-1")
    expect(page.locator("#chart .uplot canvas")).to_have_count(1)
    # the chart opens on the headline's window (15 min by default)
    expect(page.locator("#chart")).to_have_attribute("data-minutes", "15")
    expect(page.locator('#windows button[data-window="15m"]')).to_have_attribute("aria-pressed", "true")
    page.locator('#windows button[data-window="1h"]').click()
    expect(page.locator("#chart")).to_have_attribute("data-minutes", "60")
    expect(page.locator("#csv")).to_have_attribute("href", "/api/cameras/gate-1/series.csv?window=1h")
    before = page.get_by_test_id("compliance").inner_text()
    expect(page.locator("#chart")).to_have_attribute("data-total-faces", re.compile(r"^[1-9]\d*$"))
    faces = int(page.locator("#chart").get_attribute("data-total-faces") or 0)
    seed(store, "gate-1", without_mask=10)
    expect(page.get_by_test_id("compliance")).not_to_have_text(before)
    # the chart caught up too (a total, so a minute turning over meanwhile changes nothing)
    expect(page.locator("#chart")).to_have_attribute("data-total-faces", str(faces + 10))
    page.locator('#windows button[data-window="15m"]').click()
    expect(page.locator("#chart")).to_have_attribute("data-minutes", "15")
    page.locator('#windows button[data-window="1h"]').click()
    expect(page.locator("#chart")).to_have_attribute("data-minutes", "60")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-camera.png"), full_page=True, animations="disabled")
    expect(page.get_by_test_id("camera-error")).to_be_hidden()
    # the camera goes down: the page says why, without a reload
    why = "cannot open rtsp://gate.local/1: unauthorized: check the user and password in the URL"
    seed(store, "gate-1", with_mask=1, status="offline", last_error=why)
    expect(page.get_by_test_id("status")).to_have_text("offline")
    expect(page.get_by_test_id("camera-error")).to_have_text(why)
    assert outside == []


@pytest.mark.timeout(60)
def test_token_login_in_the_browser(page: Page, dashboard_serve: Callable[..., DashboardProcess]) -> None:
    token = "browser-token-123"
    served = dashboard_serve(token=token)
    seed(served.store, "gate-1", with_mask=1, name="Main gate")
    page.goto(served.url + "/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill('input[name="token"]', token)
    page.click('button[type="submit"]')
    expect(card(page, "gate-1").get_by_test_id("compliance")).to_have_text("100%")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")


@pytest.mark.timeout(300)
def test_image_check_page(page: Page, dashboard_serve: Callable[..., DashboardProcess], serving: str) -> None:
    served = dashboard_serve(serving=serving, predict_timeout_s=60)
    bgr = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    page.goto(served.url + "/check")
    page.set_input_files(
        'input[name="image"]',
        files=[{"name": "astronaut.jpg", "mimeType": "image/jpeg", "buffer": cv2.imencode(".jpg", bgr)[1].tobytes()}],
    )
    page.fill('input[name="min_score"]', "0.3")
    page.click("#check-submit")
    expect(page.locator("#check-out")).to_be_visible(timeout=60_000)
    expect(page.locator("#check-rows tr").first).to_be_visible()
    expect(page.locator("#check-img")).to_have_js_property("complete", True)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-check.png"), full_page=True, animations="disabled")


@pytest.mark.timeout(90)
def test_alert_badges_and_times_in_the_site_time_zone(
    page: Page, dashboard_serve: Callable[..., DashboardProcess], dashboard_store: Store, tmp_path: Path
) -> None:
    tz = "Asia/Kathmandu"  # UTC+05:45: no browser's default, so a time shown right is shown on purpose
    site = tmp_path / "site.yaml"
    rules = {"compliance_below": 0.8, "clear_above": 0.9, "for_s": 0, "min_people": 3}
    site.write_text(json.dumps({"site": "Airport T2", "timezone": tz, "alerts": rules}))
    store = dashboard_store
    store.heartbeat("worker", "worker-1", {"fps": 14.6, "lag": 3})
    seed_site(store)  # the hall is at 70 % with 20 people; the site at 86.8 %
    # served once every camera is in: the rules' first look is at the whole site, not at half of it
    served = dashboard_serve(site_file=str(site))
    outside = only_local(page, served.url)

    page.goto(served.url + "/")
    expect(page.get_by_test_id("site-tag")).to_have_text(f"Airport T2 · {tz}")
    hall, gate = card(page, "hall-2"), card(page, "gate-1")
    expect(hall.get_by_test_id("alert-badge")).to_be_visible()
    expect(hall).to_have_class(re.compile(r"\balerting\b"))
    expect(hall.get_by_test_id("alert-line")).to_contain_text("Alert: 70% with 20 people, below 80% since")
    expect(gate.get_by_test_id("alert-badge")).to_be_hidden()
    expect(page.get_by_test_id("site-alert")).to_have_text(re.compile(r"1 camera alerting: Assembly hall"))
    expect(page.get_by_test_id("site-alert")).to_have_class(re.compile(r"camera-only"))

    seed(store, "gate-1", without_mask=10, violations=1)  # the gate falls to 45 %, and the site to 75.6 %
    expect(gate.get_by_test_id("alert-badge")).to_be_visible()
    expect(page.get_by_test_id("site-alert")).to_contain_text("Site compliance 75.6%")
    expect(page.get_by_test_id("site-alert")).to_contain_text("2 cameras alerting")
    expect(page.get_by_test_id("alerts").locator("li")).to_have_count(3)

    # every time on the page is the site's clock time
    def clock(ms: int, fmt: str) -> str:
        return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime(fmt)

    active = {a["scope"]: a for a in page.request.get(served.url + "/api/alerts").json()["active"]}
    expect(page.locator('#alerts li[data-subject="site"]')).to_contain_text(
        "since " + clock(active["site"]["started_ms"], "%H:%M")
    )
    newest = page.request.get(served.url + "/api/violations?limit=1").json()[0]
    expect(page.locator("#violations li .v-time").first).to_have_text(clock(newest["ts_ms"], "%H:%M:%S"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-alert.png"), full_page=True, animations="disabled")

    page.goto(served.url + "/cameras/gate-1")
    expect(page.get_by_test_id("alert-line")).to_contain_text("Alert: 45% with 20 people, below 80%")
    expect(page.locator("#vio-rows tr td").first).to_have_text(clock(newest["ts_ms"], "%H:%M:%S"))
    page.screenshot(path=str(ARTIFACTS / "dashboard-camera-alert.png"), full_page=True, animations="disabled")

    seed(store, "gate-1", with_mask=200)  # recovered: the badge goes
    expect(page.get_by_test_id("alert-line")).to_be_hidden()
    page.goto(served.url + "/")
    expect(gate.get_by_test_id("alert-badge")).to_be_hidden()
    expect(hall.get_by_test_id("alert-badge")).to_be_visible()

    page.goto(served.url + "/cameras/dock-3")  # frames, but nobody in them: the chart says so
    expect(page.locator("#chart-empty")).to_be_visible()
    expect(page.locator("#chart-empty")).to_contain_text("No faces counted in this window")
    assert outside == []
