"""The site file as the dashboard uses it: the site's name, its time zone (checked), its alert rules and shifts."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass

from maskwatch.alerts import AlertsConfig
from maskwatch.site import AccessEntry, Shift, SiteError, load_site

__all__ = ["SiteError", "SiteView", "check_timezone", "load_site_view"]


@dataclass(frozen=True)
class SiteView:
    """What the dashboard needs of a site file; `SiteView()` is "no site file"."""

    name: str = ""
    timezone: str = ""  # IANA name; "" shows times in each browser's own zone
    alerts: AlertsConfig | None = None
    path: str = ""
    shifts: tuple[Shift, ...] = ()
    access: tuple[AccessEntry, ...] = ()

    @property
    def alerting(self) -> bool:
        return self.alerts is not None and self.alerts.enabled


def check_timezone(name: str, path: str) -> str:
    """`name` when it is an IANA time zone this machine knows; SiteError naming the file and field otherwise."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SiteError(
            f"{path}: field=timezone: unknown time zone {name!r}; use an IANA name such as Europe/London"
        ) from None
    return name


def load_site_view(path: str | None) -> SiteView:
    """Read and check the site file at `path` (None: no site file). Raises SiteError naming file and field."""
    if path is None:
        return SiteView()
    site = load_site(path)
    alerts = site.alerts
    if alerts is not None and site.cameras:
        listed = {c.id for c in site.cameras}
        unknown = sorted(set(alerts.cameras) - listed)
        if unknown:
            raise SiteError(
                f"{path}: field=alerts.cameras: no camera {', '.join(map(repr, unknown))} in this site file's cameras"
            )
    return SiteView(
        name=site.site,
        timezone=check_timezone(site.timezone, path),
        alerts=alerts,
        path=str(path),
        shifts=tuple(site.shifts),
        access=tuple(site.access),
    )
