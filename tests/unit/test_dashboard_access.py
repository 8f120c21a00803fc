"""Principals: who a token is, which cameras and zones it sees, which Socket.IO rooms its sockets join."""

from __future__ import annotations

import hashlib

import pytest

from dashboard.access import MAIN_TOKEN, Principal, by_name, by_token, rooms_for_camera
from maskwatch.site import AccessEntry, SiteError, parse_site

WARD = Principal("ward-lead", "viewer", frozenset({"Ward A"}))
ONE = Principal("guard", "viewer", cameras=frozenset({"gate-2"}))
BOTH = Principal("both", "viewer", frozenset({"Ward A"}), frozenset({"gate-2"}))
ALL = Principal("ops", "admin")


@pytest.mark.parametrize(
    ("who", "cid", "zone", "sees"),
    [
        (WARD, "a-1", "Ward A", True),
        (WARD, "b-1", "Ward B", False),
        (WARD, "x", "", False),  # a camera with no zone is nobody's zone
        (ONE, "gate-2", "Gate", True),
        (ONE, "gate-1", "Gate", False),
        (BOTH, "gate-2", "Gate", True),
        (BOTH, "a-9", "Ward A", True),
        (ALL, "b-1", "Ward B", True),
        (ALL, "x", "", True),
    ],
)
def test_sees(who: Principal, cid: str, zone: str, sees: bool) -> None:
    assert who.sees(cid, zone) is sees


def test_zone_figures_only_for_whole_zones_and_rooms_match_the_scope() -> None:
    assert WARD.sees_zone("Ward A") and not WARD.sees_zone("Ward B")
    assert not ONE.sees_zone("Gate") and ALL.sees_zone("anything")
    assert WARD.rooms() == ["scope:ward-lead", "zone:Ward A"]
    assert ONE.rooms() == ["scope:guard", "cam:gate-2"]
    assert ALL.rooms() == ["site"]
    # a camera's events reach exactly the principals that see it
    for who in (WARD, ONE, BOTH, ALL):
        for cid, zone in (("a-1", "Ward A"), ("b-1", "Ward B"), ("gate-2", "Gate"), ("x", "")):
            assert bool(set(who.rooms()) & set(rooms_for_camera(cid, zone))) is who.sees(cid, zone), (who, cid)


def test_tokens_by_digest_and_sessions_by_name() -> None:
    entries = [AccessEntry(name="ward-lead", zones=["Ward A"], sha256=hashlib.sha256(b"tok-ward").hexdigest())]
    assert by_token("tok-ward", None, entries) == WARD
    assert by_token("tok-ward ", None, entries) is None
    assert by_token("main-token", "main-token", entries) == MAIN_TOKEN
    assert by_token("main-token", None, entries) is None
    assert by_name("ward-lead", None, entries) == WARD
    assert by_name("token", "main-token", entries) == MAIN_TOKEN
    assert by_name("token", None, entries) is None  # the main token was unset since the session opened
    assert by_name("gone", None, entries) is None


@pytest.mark.parametrize(
    ("access", "error"),
    [
        ("[{name: a, sha256: abc}]", "64 lower-case hex"),
        ("[{name: a, sha256: " + "A" * 64 + "}]", "64 lower-case hex"),
        ("[{name: token, sha256: " + "a" * 64 + "}]", "MW_DASHBOARD_TOKEN"),
        ("[{name: a, role: boss, sha256: " + "a" * 64 + "}]", "role"),
        ("[{name: a, token: hunter2, sha256: " + "a" * 64 + "}]", "token"),
        ("[{name: a, sha256: " + "a" * 64 + "}, {name: a, sha256: " + "b" * 64 + "}]", "share the name"),
        ("[{name: a, sha256: " + "a" * 64 + "}, {name: b, sha256: " + "a" * 64 + "}]", "share the sha256"),
    ],
)
def test_site_file_access_is_checked(access: str, error: str) -> None:
    with pytest.raises(SiteError, match=error):
        parse_site(f"site: s\naccess: {access}\n", "site.yaml")
