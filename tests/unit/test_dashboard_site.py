"""The site file as the dashboard reads it: name, time zone, alert rules, and the mistakes it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard.site import SiteError, SiteView, load_site_view

pytestmark = pytest.mark.timeout(30)

SITE = """\
site: airport
timezone: Asia/Kathmandu
cameras:
  - id: gate-a
    source: synthetic:mixed
alerts:
  for_s: 30
  cameras:
    gate-a: {min_people: 2}
"""


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "site.yaml"
    p.write_text(text)
    return str(p)


def test_no_site_file() -> None:
    view = load_site_view(None)
    assert view == SiteView() and not view.alerting and view.timezone == ""


def test_site_view(tmp_path: Path) -> None:
    view = load_site_view(write(tmp_path, SITE))
    assert (view.name, view.timezone, view.alerting) == ("airport", "Asia/Kathmandu", True)
    assert view.alerts is not None and view.alerts.rule_for("gate-a").min_people == 2


def test_alerts_off_when_disabled(tmp_path: Path) -> None:
    assert not load_site_view(write(tmp_path, SITE.replace("  for_s: 30\n", "  enabled: false\n"))).alerting


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        (SITE.replace("Asia/Kathmandu", "Mars/Olympus_Mons"), ["site.yaml: field=timezone", "Mars/Olympus_Mons"]),
        (SITE.replace("Asia/Kathmandu", "../../etc/passwd"), ["field=timezone"]),
        (SITE.replace("    gate-a: {min_people: 2}", "    gate-z: {min_people: 2}"), ["alerts.cameras", "'gate-z'"]),
        (SITE.replace("for_s: 30", "for_s: soon"), ["site.yaml:7:", "field=alerts.for_s"]),
    ],
)
def test_bad_site_files_are_refused_naming_file_and_field(tmp_path: Path, text: str, expect: list[str]) -> None:
    with pytest.raises(SiteError) as err:
        load_site_view(write(tmp_path, text))
    for part in expect:
        assert part in str(err.value)


def test_overrides_for_unlisted_cameras_pass_when_the_file_lists_none(tmp_path: Path) -> None:
    """A dashboard-only site file (no cameras: the producers have their own) may still name cameras."""
    view = load_site_view(write(tmp_path, "site: airport\nalerts:\n  cameras:\n    gate-z: {enabled: false}\n"))
    assert view.alerts is not None and not view.alerts.rule_for("gate-z").enabled


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match="cannot read site file"):
        load_site_view(str(tmp_path / "nope.yaml"))
