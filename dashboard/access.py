"""Who a request is and what it may see: principals from MW_DASHBOARD_TOKEN or the site file's `access:` tokens."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from flask import g

from maskwatch.site import MAIN_TOKEN_NAME, AccessEntry

ADMIN, VIEWER = "admin", "viewer"
SITE_ROOM = "site"


def camera_room(cid: str) -> str:
    return f"cam:{cid}"


def zone_room(zone: str) -> str:
    return f"zone:{zone}"


def scope_room(name: str) -> str:
    return f"scope:{name}"


def rooms_for_camera(cid: str, zone: str) -> list[str]:
    """The Socket.IO rooms a camera's events go to: everyone who sees all, its zone's and its own viewers."""
    return [SITE_ROOM, camera_room(cid), *([zone_room(zone)] if zone else [])]


@dataclass(frozen=True)
class Principal:
    """Who is asking: a name, a role and a scope (no zones and no cameras: everything)."""

    name: str
    role: str = VIEWER
    zones: frozenset[str] = frozenset()
    cameras: frozenset[str] = frozenset()

    @property
    def scoped(self) -> bool:
        return bool(self.zones or self.cameras)

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    def sees(self, cid: str, zone: str) -> bool:
        """True when the camera (in `zone`) is in this principal's scope."""
        return not self.scoped or cid in self.cameras or (bool(zone) and zone in self.zones)

    def sees_zone(self, zone: str) -> bool:
        """A zone's own figures include every camera it held: only for principals that see the whole zone."""
        return not self.scoped or zone in self.zones

    def rooms(self) -> list[str]:
        """The Socket.IO rooms this principal's sockets join."""
        if not self.scoped:
            return [SITE_ROOM]
        return [scope_room(self.name), *map(zone_room, sorted(self.zones)), *map(camera_room, sorted(self.cameras))]


# no token and no access entries: the dashboard is open (on loopback, or --insecure), everyone sees everything
EVERYONE = Principal("anyone", ADMIN)
MAIN_TOKEN = Principal(MAIN_TOKEN_NAME, ADMIN)


def from_entry(e: AccessEntry) -> Principal:
    return Principal(e.name, e.role, frozenset(e.zones), frozenset(e.cameras))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def by_token(value: str, token: str | None, access: Sequence[AccessEntry]) -> Principal | None:
    """The principal a presented token belongs to (compared in constant time), or None."""
    if token is not None and hmac.compare_digest(value.encode(), token.encode()):
        return MAIN_TOKEN
    digest = token_digest(value)
    found = None
    for e in access:
        if hmac.compare_digest(digest, e.sha256):
            found = from_entry(e)
    return found


def by_name(name: object, token: str | None, access: Sequence[AccessEntry]) -> Principal | None:
    """The principal a session was opened by (None when the site file no longer lists it)."""
    if name == MAIN_TOKEN_NAME:
        return MAIN_TOKEN if token is not None else None
    return next((from_entry(e) for e in access if e.name == name), None)


def current() -> Principal:
    """The principal of the request being handled (everyone when the dashboard has no tokens)."""
    p: Principal | None = g.get("mw_principal")
    return p if p is not None else EVERYONE


def visible(ids_zones: Iterable[tuple[str, str]], who: Principal) -> list[str]:
    return [cid for cid, zone in ids_zones if who.sees(cid, zone)]
