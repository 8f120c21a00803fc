"""Violation episodes in a real headless Chromium: one line per person on the overview and the camera page, updated
in place while the episode goes on and when it closes."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, expect

from maskwatch.payloads import LiveNotice
from maskwatch.store import EPISODE_CLOSED, EPISODE_OPEN, BatchWrite, Episode, Store, episode_notice
from tests.integration.dashboard_fixtures import (  # noqa: F401  (fixture_* are fixtures)
    FRAME_JPEG,
    ServedDashboard,
    fixture_dashboard_serve,
    fixture_dashboard_served,
    fixture_dashboard_store,
    seed,
)
from tests.integration.test_dashboard_browser import browser, only_local, page  # noqa: F401

pytestmark = pytest.mark.browser


def write(store: Store, ep: Episode, offset: int) -> None:
    """What a worker does with an episode's new state: the batch's transaction, then the live notice."""
    b = BatchWrite()
    b.start_offsets[("t-ep", 0)], b.next_offsets[("t-ep", 0)] = offset, offset + 1
    b.episodes.append((("t-ep", 0), ep))
    assert store.commit_batch(b, "g-ep").applied == {("t-ep", 0)}
    store.publish_update(LiveNotice("w", ep.last_ms, {}, (episode_notice(ep),)))


@pytest.mark.timeout(60)
def test_an_episode_is_one_line_that_goes_on_and_closes(page: Page, dashboard_served: ServedDashboard) -> None:  # noqa: F811
    store = dashboard_served.store
    seed(store, "gate-1", with_mask=3, name="Main gate", zone="Entrance")
    outside = only_local(page, dashboard_served.url)
    page.goto(dashboard_served.url + "/")
    expect(page.locator("#violations-empty")).to_be_visible()
    t0 = int(time.time() * 1000)
    box = (0.1, 0.2, 0.4, 0.5)
    votes = (("without_mask", 5),)
    opened = Episode("gate-1", f"{t0}-1000-2000", "without_mask", votes, t0, t0 + 2000, box, 0.9, EPISODE_OPEN, 5000, t0, FRAME_JPEG)
    write(store, opened, 0)
    line = page.locator("#violations li")
    expect(line).to_have_count(1)
    expect(line).to_contain_text("Main gate")
    expect(line.locator(".v-duration")).to_have_text("ongoing 2 s")
    later = Episode("gate-1", opened.id, "without_mask", (("without_mask", 40),), t0, t0 + 30_000, box, 0.95, EPISODE_OPEN, 5000, t0)
    write(store, later, 1)
    expect(line.locator(".v-duration")).to_have_text("ongoing 30 s")
    closed = Episode("gate-1", opened.id, "without_mask", (("without_mask", 41),), t0, t0 + 31_000, box, 0.95, EPISODE_CLOSED, 5000, t0)
    write(store, closed, 2)
    expect(line.locator(".v-duration")).to_have_text("31 s")
    expect(line).to_have_count(1)  # the same person all along: one line
    # the camera page lists the same episode with its snapshot
    page.goto(dashboard_served.url + "/cameras/gate-1")
    row = page.locator("#vio-rows tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("31 s")
    expect(row.locator("img")).to_have_attribute("src", f"/api/cameras/gate-1/snapshots/{opened.id}.jpg")
    assert page.evaluate("document.querySelector('#vio-rows img').complete") is not None
    assert outside == []
