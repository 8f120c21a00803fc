"""Reports on real parts: the REST report (JSON, CSV, HTML), `maskwatch report`, and printing it to PDF in Chromium."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from maskwatch.store import Store
from tests.integration.dashboard_fixtures import (  # noqa: F401  (fixture_* are fixtures)
    ServedDashboard,
    fixture_dashboard_serve,
    fixture_dashboard_store,
    seed,
)
from tests.integration.test_dashboard_browser import ARTIFACTS, browser, only_local, page  # noqa: F401

D, H = 86_400_000, 3_600_000
SITE = """site: Plant 7
timezone: UTC
shifts:
  - {name: Early, start: "06:00", end: "14:00"}
  - {name: Late, start: "14:00", end: "22:00"}
  - {name: Night, start: "22:00", end: "06:00"}
"""


@pytest.fixture
def served(tmp_path: Path, dashboard_serve: Callable[..., ServedDashboard]) -> ServedDashboard:
    site = tmp_path / "site.yaml"
    site.write_text(SITE)
    return dashboard_serve(site_file=str(site))


def fill(store: Store) -> tuple[int, int, int]:
    """Two weeks of two zones until now; ward-1 masked, gate-1 bare in Late hours with one violation episode each.

    Returns (from, to, episodes)."""
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = int((today - dt.timedelta(days=13)).timestamp() * 1000)
    episodes = 0
    for day in range(14):
        for hour in (8, 15):  # an Early and a Late hour each day
            ts = start + day * D + hour * H + 60_000
            if ts > time.time() * 1000:
                continue
            seed(store, "ward-1", with_mask=6, ts_ms=ts, jpeg=None, zone="Ward A", name="Ward 1")
            bad = 6 if hour == 15 else 1
            seed(store, "gate-1", with_mask=6 - bad, without_mask=bad, ts_ms=ts, jpeg=None, zone="Gate", name="Gate 1",
                 violations=1 if hour == 15 else 0)  # fmt: skip
            episodes += hour == 15
    return start, int(time.time() * 1000) + 1, episodes


@pytest.mark.timeout(60)
def test_report_figures_csv_and_cli_agree(served: ServedDashboard, redis_url: str, tmp_path: Path) -> None:
    start, to, days = fill(served.store)
    http = served.app.test_client()
    body = http.get(f"/api/report?from={start}&to={to}&format=json").get_json()
    assert body["subject"] == {"kind": "site", "name": "Plant 7"}
    assert body["totals"]["episodes"] == len(body["episodes"]) == days
    assert {c["camera"] for c in body["cameras"]} == {"ward-1", "gate-1"}
    # the cameras add up to the total, also over a range that cuts days (from 03:00)
    cut = http.get(f"/api/report?from={start + 3 * H}&to={to}&format=json").get_json()
    assert sum(c["faces"] for c in cut["cameras"]) == cut["totals"]["faces"] > 0
    shifts = {s["name"]: s for s in body["shifts"]}
    assert shifts["Late"]["compliance"] == 0.5 and shifts["Night"]["faces"] == 0
    assert shifts["Early"]["compliance"] == round(11 / 12, 4)
    assert all(h["ts_ms"] % D == 15 * H for h in body["worst_hours"])  # the bare Late hours rank worst
    # this week against the week before: the same figures /api/history gives for that week
    week = 7 * D
    recent = http.get(f"/api/report?from={to - week}&to={to}&zone=Gate&format=json").get_json()
    prev = recent["previous"]
    assert (prev["from_ms"], prev["to_ms"]) == (to - 2 * week, to - week)
    before = http.get(f"/api/history?from={to - 2 * week}&to={to - week}&zone=Gate&resolution=hour").get_json()["total"]
    assert prev["faces"] > 0
    assert (prev["compliance"], prev["with_mask"], prev["without_mask"]) == (before["compliance"], before["with_mask"], before["without_mask"])
    assert prev["change_points"] == round(100 * (recent["totals"]["compliance"] - prev["compliance"]), 1)
    gate = http.get(f"/api/report?from={start}&to={to}&zone=Gate&format=json").get_json()
    assert [c["camera"] for c in gate["cameras"]] == ["gate-1"] and gate["totals"]["episodes"] == days
    csv_api = http.get(f"/api/report?from={start}&to={to}&format=csv")
    assert csv_api.mimetype == "text/csv" and "attachment" in csv_api.headers["Content-Disposition"]
    out = tmp_path / "r.csv"
    site = tmp_path / "site.yaml"  # written by the fixture
    cli = subprocess.run(
        [sys.executable, "-m", "maskwatch.cli", "report", "--redis-url", redis_url, "--redis-prefix", served.store.keys.prefix,
         "--from", str(start), "--to", str(to), "--format", "csv", "--out", str(out), "--site", str(site)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert out.read_text() == csv_api.get_data(as_text=True)
    html = http.get(f"/api/report?from={start}&to={to}")
    assert html.mimetype == "text/html" and html.get_data(as_text=True).count('src="data:image/jpeg;base64,') == days
    for bad, error in [("format=pdf", "bad format"), ("from=2026-12-09&to=2026-12-01", "bad range"), ("zone=Nowhere", "unknown zone")]:
        assert http.get("/api/report?" + bad).get_json()["error"] == error


@pytest.mark.timeout(90)
def test_report_page_opens_a_report_that_prints_to_a_clean_pdf(page: Page, served: ServedDashboard, tmp_path: Path) -> None:  # noqa: F811
    start, _, episodes = fill(served.store)
    outside = only_local(page, served.url)
    page.goto(served.url + "/report")
    page.fill("#from", dt.datetime.fromtimestamp(start / 1000, dt.UTC).date().isoformat())
    page.select_option("#subject", label="Gate")
    expect(page.locator("#csv-link")).to_have_attribute("href", __import__("re").compile(r"zone=Gate"))
    page.click("#open-report")
    expect(page.locator("h1")).to_have_text("Mask compliance report")
    expect(page.locator("#episodes tbody tr")).to_have_count(episodes)
    expect(page.locator("#episodes img.snap").first).to_be_visible()
    assert page.evaluate("[...document.images].every((i) => i.complete && i.naturalWidth > 0)")
    pdf = tmp_path / "report.pdf"
    page.emulate_media(media="print")
    page.pdf(path=str(pdf), format="A4", print_background=True)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report.pdf").write_bytes(pdf.read_bytes())
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    # a clean document: the report alone (no dashboard navigation), every section, every episode, page by page
    assert 1 <= pages <= 3, pages
    assert "Mask compliance report" in text and "zone Gate" in text and "Plant 7" in text
    for section in ("The period before", "Cameras", "Shifts", "Worst hours", "Violation episodes", "Early", "Late", "Night"):
        assert section in text, section
    assert "Overview" not in text and "Log out" not in text
    assert text.count("no mask") == episodes
    per_page = text.split("\f")
    assert all(p.strip() for p in per_page[:pages]), "an empty page"
    assert outside == []
