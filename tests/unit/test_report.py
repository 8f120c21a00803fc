"""Report pieces: shifts (past midnight too), worst hours, the site file's `shifts:`, the CSV's sections."""

from __future__ import annotations

import datetime as dt

import pytest

from maskwatch.detections import Counts
from maskwatch.report import shift_totals, to_csv, worst_hours
from maskwatch.site import Shift, SiteError, parse_site

H = 3_600_000
MIDNIGHT = int(dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("start", "end", "minute", "inside"),
    [
        ("06:00", "14:00", 6 * 60, True),
        ("06:00", "14:00", 14 * 60, False),
        ("06:00", "14:00", 5 * 60 + 59, False),
        ("22:00", "06:00", 23 * 60, True),
        ("22:00", "06:00", 2 * 60, True),
        ("22:00", "06:00", 6 * 60, False),
        ("22:00", "06:00", 12 * 60, False),
    ],
)
def test_shift_covers(start: str, end: str, minute: int, inside: bool) -> None:
    assert Shift(name="s", start=start, end=end).covers(minute) is inside


def test_shift_totals_sum_the_hours_of_each_shift() -> None:
    rows = [(MIDNIGHT + h * H, Counts(with_mask=1, without_mask=1 if h < 6 else 0)) for h in range(24)]
    day, night = Shift(name="day", start="06:00", end="22:00"), Shift(name="night", start="22:00", end="06:00")
    got = {s["name"]: s for s in shift_totals(rows, [day, night], dt.UTC)}
    assert (got["day"]["faces"], got["day"]["compliance"]) == (16, 1.0)
    assert (got["night"]["faces"], got["night"]["compliance"]) == (8 + 6 - 0, round(8 / 14, 4))
    # the same hours in Paris (UTC+1) move one hour later
    paris = {s["name"]: s for s in shift_totals(rows, [day], dt.timezone(dt.timedelta(hours=1)))}
    assert paris["day"]["faces"] == 16 + 1  # 05:00 UTC (a bad hour) is 06:00 in Paris


def test_worst_hours_need_enough_faces_and_rank_by_compliance() -> None:
    rows = [
        (0, Counts(with_mask=0, without_mask=1)),  # one passer-by: not ranked
        (H, Counts(with_mask=5, without_mask=5)),
        (2 * H, Counts(with_mask=9, without_mask=1)),
        (3 * H, Counts(with_mask=2, without_mask=8)),
    ]
    assert [h["ts_ms"] for h in worst_hours(rows, 2)] == [3 * H, H]


@pytest.mark.parametrize(
    ("shifts", "error"),
    [
        ("[{name: a, start: '6:00', end: '14:00'}]", "HH:MM"),
        ("[{name: a, start: '06:00', end: '24:00'}]", "HH:MM"),
        ("[{name: a, start: '06:00', end: '06:00'}]", "starts and ends"),
        ("[{name: a, start: '06:00', end: '14:00'}, {name: a, start: '14:00', end: '22:00'}]", "duplicate shift"),
        ("[{name: a, start: '06:00'}]", "end"),
    ],
)
def test_site_file_shifts_are_checked(shifts: str, error: str) -> None:
    with pytest.raises(SiteError, match=error):
        parse_site(f"site: s\nshifts: {shifts}\n", "site.yaml")


def test_csv_has_one_row_per_section_item() -> None:
    body = {
        "timezone": "UTC",
        "from_ms": MIDNIGHT,
        "to_ms": MIDNIGHT + 24 * H,
        "subject": {"kind": "site", "name": "plant"},
        "totals": {"compliance": 0.5, "faces": 4, "with_mask": 2, "without_mask": 2, "mask_worn_incorrectly": 0, "people": 2, "episodes": 1},
        "previous": {"from_ms": MIDNIGHT - 24 * H, "to_ms": MIDNIGHT, "compliance": 0.25, "faces": 4, "episodes": 3, "change_points": 25.0},
        "cameras": [{"camera": "c1", "compliance": 0.5, "faces": 4, "episodes": 1}],
        "shifts": [{"name": "day", "start": "06:00", "end": "22:00", "compliance": 0.5, "faces": 4}],
        "worst_hours": [{"ts_ms": MIDNIGHT + 8 * H, "compliance": 0.5, "faces": 4}],
        "episodes": [{"camera": "c1", "first_ms": MIDNIGHT + 8 * H, "last_ms": MIDNIGHT + 8 * H + 5000, "class": "without_mask", "duration_s": 5.0}],
    }
    lines = to_csv(body).splitlines()
    assert lines[0].startswith("section,subject,start,end,compliance,faces")
    assert [line.split(",")[0] for line in lines[1:]] == ["total", "previous_period", "camera", "shift", "worst_hour", "episode"]
    assert lines[2].split(",")[2:6] == ["2026-11-30 00:00", "2026-12-01 00:00", "0.25", "4"]
    assert lines[5].split(",")[2:4] == ["2026-12-01 08:00", "2026-12-01 09:00"]
    assert lines[6].endswith("without_mask,5.0")
