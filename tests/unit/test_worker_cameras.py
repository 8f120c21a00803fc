"""Which cameras the worker counts, and their zones: the reads are bounded whatever ids arrive."""

from __future__ import annotations

import pytest

from worker.cameras import CameraRegistry, CameraZones

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Redis:
    def __init__(self, *ids: str) -> None:
        self.ids = list(ids)
        self.reads = 0

    def camera_ids(self) -> list[str]:
        self.reads += 1
        return list(self.ids)


def test_site_cameras_counted_others_not() -> None:
    r, clock = Redis("gate-1"), Clock()
    reg = CameraRegistry(r.camera_ids, open_registration=False, clock=clock)
    assert reg.counts("gate-1") and not reg.counts("nobody")
    assert r.reads == 1


def test_a_flood_of_made_up_ids_costs_one_read_per_interval() -> None:
    r, clock = Redis("gate-1"), Clock()
    reg = CameraRegistry(r.camera_ids, open_registration=False, min_refresh_s=1.0, clock=clock)
    assert not any(reg.counts(f"fake-{i}") for i in range(1000))
    assert r.reads == 1
    clock.t = 1.0
    assert not reg.counts("fake-1000") and r.reads == 2


def test_a_camera_added_to_the_site_is_seen_at_the_next_read() -> None:
    r, clock = Redis("gate-1"), Clock()
    reg = CameraRegistry(r.camera_ids, open_registration=False, min_refresh_s=1.0, max_age_s=30.0, clock=clock)
    assert not reg.counts("gate-2")
    r.ids.append("gate-2")
    clock.t = 1.5
    assert reg.counts("gate-2")
    r.ids.remove("gate-1")  # removed from the site: forgotten at the next periodic read
    clock.t = 40.0
    assert not reg.counts("gate-1")


def test_open_registration_counts_anything_and_reads_nothing() -> None:
    r = Redis()
    reg = CameraRegistry(r.camera_ids, open_registration=True)
    assert reg.counts("anything") and r.reads == 0


class Zones:
    def __init__(self, **zones: str) -> None:
        self.zones = zones
        self.reads: list[list[str]] = []

    def camera_zones(self, cids: list[str]) -> dict[str, str]:
        self.reads.append(sorted(cids))
        return {c: self.zones.get(c, "") for c in cids}


def test_zones_are_read_for_new_cameras_and_all_re_read_now_and_then() -> None:
    r, clock = Zones(gate="entrance", hall="lobby"), Clock()
    clock.t = 100.0
    zones = CameraZones(r.camera_zones, refresh_s=30.0, clock=clock)
    assert zones.of({"gate"}) == {"gate": "entrance"}
    assert zones.of({"gate"}) == {"gate": "entrance"}
    assert zones.of({"gate", "hall", "lab"}) == {"gate": "entrance", "hall": "lobby", "lab": ""}
    assert r.reads == [["gate"], ["hall", "lab"]]
    r.zones["gate"] = "car park"  # moved in the site file: followed at the next periodic read
    clock.t = 130.0
    assert zones.of({"gate"}) == {"gate": "car park"}
    assert r.reads[-1] == ["gate", "hall", "lab"]
