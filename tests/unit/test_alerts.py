"""Alert rules from the site file, the start/clear hysteresis, and what the dashboard's alert engine records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dashboard.alerts import AlertEngine, alert_text, people_seen, site_reading
from dashboard.webhook import WebhookSender
from maskwatch.alerts import (
    REASON_BELOW,
    REASON_DISABLED,
    REASON_RECOVERED,
    REASON_TOO_FEW,
    AlertOverride,
    AlertRule,
    AlertsConfig,
    Hysteresis,
    camera_subject,
)
from maskwatch.detections import Counts
from maskwatch.payloads import CameraSummary
from maskwatch.site import SiteError, parse_site

pytestmark = pytest.mark.timeout(30)

RULE = AlertRule(enabled=True, compliance_below=0.8, clear_above=0.85, for_s=60, clear_for_s=30, min_people=5)

# ---- hysteresis ------------------------------------------------------------------------------

Reading = tuple[float, float | None, int]  # (seconds, compliance, people)


def run(readings: list[Reading], rule: AlertRule = RULE) -> list[tuple[float, str, str | None]]:
    h = Hysteresis()
    out = []
    for t, comp, people in readings:
        transition = h.update(rule, comp, people, int(t * 1000))
        if transition is not None:
            out.append((t, transition, h.reason))
    return out


LOW_FOR_A_MINUTE: list[Reading] = [(0, 0.5, 10), (30, 0.5, 10), (60, 0.5, 10)]


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        pytest.param(LOW_FOR_A_MINUTE, [(60, "start", REASON_BELOW)], id="low for for_s starts"),
        pytest.param([(0, 0.5, 10), (59, 0.5, 10)], [], id="low for less than for_s does not"),
        pytest.param(
            [(0, 0.5, 10), (30, 0.5, 10), (40, 0.9, 10), (100, 0.5, 10), (130, 0.5, 10)],
            [],
            id="a good reading restarts the start timer",
        ),
        pytest.param(
            [(0, 0.5, 10), (30, 0.82, 10), (60, 0.5, 10), (119, 0.5, 10), (120, 0.5, 10)],
            [(120, "start", REASON_BELOW)],
            id="a reading between the thresholds restarts it too",
        ),
        pytest.param([(0, 0.1, 4), (100, 0.1, 4)], [], id="too few people never start one"),
        pytest.param([(0, None, 0), (100, None, 0)], [], id="no people at all never start one"),
        pytest.param([(0, 0.8, 10), (100, 0.8, 10)], [], id="exactly the start threshold is not below it"),
        pytest.param(
            [(0, 0.79, 10), (20, 0.81, 10), (40, 0.79, 10), (60, 0.81, 10), (80, 0.79, 10), (100, 0.81, 10)],
            [],
            id="wobbling around the start threshold starts nothing",
        ),
        pytest.param(
            [*LOW_FOR_A_MINUTE, (70, 0.82, 10), (300, 0.84, 10), (400, 0.79, 10), (500, 0.84, 10)],
            [(60, "start", REASON_BELOW)],
            id="between the thresholds an alert holds",
        ),
        pytest.param(
            [*LOW_FOR_A_MINUTE, (70, 0.9, 10), (99, 0.9, 10), (100, 0.9, 10)],
            [(60, "start", REASON_BELOW), (100, "end", REASON_RECOVERED)],
            id="recovered for clear_for_s ends",
        ),
        pytest.param(
            [*LOW_FOR_A_MINUTE, (70, 0.85, 10), (100, 0.85, 10)],
            [(60, "start", REASON_BELOW), (100, "end", REASON_RECOVERED)],
            id="exactly the clear threshold counts as recovered",
        ),
        pytest.param(
            [*LOW_FOR_A_MINUTE, (70, 0.9, 10), (90, 0.82, 10), (100, 0.9, 10), (129, 0.9, 10), (130, 0.9, 10)],
            [(60, "start", REASON_BELOW), (130, "end", REASON_RECOVERED)],
            id="a relapse restarts the clear timer",
        ),
        pytest.param(
            [*LOW_FOR_A_MINUTE, (70, 0.5, 2), (100, None, 0)],
            [(60, "start", REASON_BELOW), (100, "end", REASON_TOO_FEW)],
            id="too few people for clear_for_s ends it",
        ),
        pytest.param(
            [*LOW_FOR_A_MINUTE, (70, 0.9, 10), (100, 0.9, 10), (110, 0.5, 10), (169, 0.5, 10), (170, 0.5, 10)],
            [(60, "start", REASON_BELOW), (100, "end", REASON_RECOVERED), (170, "start", REASON_BELOW)],
            id="after an end, a new alert needs for_s again",
        ),
    ],
)
def test_hysteresis(readings: list[Reading], expected: list[tuple[float, str, str]]) -> None:
    assert run(readings) == expected


@pytest.mark.parametrize(
    ("rule", "readings", "expected"),
    [
        pytest.param(
            AlertRule(True, 0.8, 0.85, 0, 0, 1), [(0, 0.5, 1), (1, 0.9, 1)], [(0, "start"), (1, "end")], id="zero durations"
        ),
        pytest.param(
            AlertRule(True, 0.8, 0.8, 0, 0, 1),
            [(0, 0.79, 1), (1, 0.8, 1), (2, 0.79, 1)],
            [(0, "start"), (1, "end"), (2, "start")],
            id="equal thresholds: no band",
        ),
        pytest.param(
            AlertRule(True, 0.8, 0.85, 10, 0, 20),
            [(0, 0.5, 19), (10, 0.5, 19), (20, 0.5, 20), (30, 0.5, 20)],
            [(30, "start")],
            id="min_people counts the people seen",
        ),
    ],
)
def test_hysteresis_edges(rule: AlertRule, readings: list[Reading], expected: list[tuple[float, str]]) -> None:
    assert [(t, tr) for t, tr, _ in run(readings, rule)] == expected


def test_turning_a_rule_off_ends_its_alert_at_once() -> None:
    h = Hysteresis()
    assert h.update(RULE, 0.5, 10, 0) is None
    assert h.update(RULE, 0.5, 10, 60_000) == "start"
    off = AlertRule(False, 0.8, 0.85, 60, 30, 5)
    assert h.update(off, 0.5, 10, 61_000) == "end" and h.reason == REASON_DISABLED
    assert h.update(off, 0.5, 10, 999_000) is None


def test_resume_and_forget() -> None:
    h = Hysteresis()
    h.resume(5_000)
    assert h.firing and h.started_ms == 5_000
    assert h.update(RULE, 0.9, 10, 10_000) is None
    assert h.update(RULE, 0.9, 10, 40_000) == "end"
    h.resume(50_000)
    h.forget()
    assert not h.firing and h.update(RULE, 0.5, 10, 60_000) is None


# ---- the site file's alerts: section -------------------------------------------------------------

SITE = """\
site: airport
timezone: Europe/Paris
cameras:
  - id: gate-a
    source: synthetic:mixed
  - id: gate-b
    source: synthetic:bare
alerts:
  compliance_below: 0.8
  clear_above: 0.85
  for_s: 60
  min_people: 5
  webhook_url: https://hooks.example.org/T000/secret-path
  site:
    min_people: 20
  cameras:
    gate-a:
      compliance_below: 0.9
      clear_above: 0.95
      clear_for_s: 10
    gate-b:
      enabled: false
"""


def test_alerts_section_and_overrides() -> None:
    cfg = parse_site(SITE, "site.yaml").alerts
    assert cfg is not None
    assert cfg.rule_for("gate-a") == AlertRule(True, 0.9, 0.95, 60, 10, 5)
    assert cfg.rule_for("gate-b").enabled is False
    assert cfg.rule_for("elsewhere") == AlertRule(True, 0.8, 0.85, 60, 60, 5), "clear_for_s defaults to for_s"
    assert cfg.rule_for(None) == AlertRule(True, 0.8, 0.85, 60, 60, 20)
    assert cfg.webhook_host() == "https://hooks.example.org", "logs never see the secret path"


def test_no_alerts_section_means_no_alerts() -> None:
    assert parse_site("site: x\n", "site.yaml").alerts is None
    assert AlertsConfig().rule_for(None) == AlertRule(True, 0.8, 0.85, 60, 60, 5), "an empty alerts: section"
    assert parse_site("alerts: {enabled: false}\n").alerts.rule_for("a").enabled is False  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (("compliance_below: 0.8", "compliance_below: 1.5"), ["site.yaml:9:", "field=alerts.compliance_below", "1"]),
        (("clear_above: 0.85", "clear_above: 0.7"), ["field=alerts", "clear_above (0.7) must not be below"]),
        (
            ("      clear_above: 0.95\n", "      clear_above: 0.85\n"),
            ["alerts.cameras.gate-a: clear_above (0.85) must not be below compliance_below (0.9)"],
        ),
        (("for_s: 60", "for_s: -1"), ["site.yaml:11:", "field=alerts.for_s"]),
        (("min_people: 5", "min_people: 0"), ["site.yaml:12:", "field=alerts.min_people"]),
        (("min_people: 5", "min_peeple: 5"), ["field=alerts.min_peeple", "Extra inputs"]),
        (("https://hooks", "ftp://hooks"), ["site.yaml:13:", "field=alerts.webhook_url", "http:// or https://"]),
        (("    gate-b:\n", "    'gate b':\n"), ["field=alerts.cameras", "not a camera id"]),
        (("      enabled: false", "      enabled: sometimes"), ["site.yaml:22:", "field=alerts.cameras.gate-b.enabled"]),
    ],
)
def test_bad_alerts_name_file_line_and_field(edit: tuple[str, str], expect: list[str]) -> None:
    text = SITE.replace(*edit)
    assert text != SITE
    with pytest.raises(SiteError) as err:
        parse_site(text, "site.yaml")
    for part in expect:
        assert part in str(err.value), str(err.value)


# ---- readings and events ---------------------------------------------------------------------------


def summary(cid: str, masked: int, bare: int, persons: int | None = None, **extra: Any) -> CameraSummary:
    people = masked + bare
    window = Counts(with_mask=masked, without_mask=bare)
    return CameraSummary(
        camera=cid, name=extra.get("name", cid), site="", zone="", status="online", last_error="", fps=0.0,
        last_frame_ms=None, data_age_s=None, lag=None, window_minutes=15, window=window,
        compliance=masked / people if people else None, totals=window,
        persons={"persons": people if persons is None else persons}, warnings=(),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("s", "people"),
    [
        (summary("a", 30, 10, persons=4), 4),  # tracked: four people seen many times
        (summary("a", 3, 1, persons=0), 4),  # no tracker: faces with a verdict
        (summary("a", 0, 0), 0),
    ],
)
def test_people_seen(s: CameraSummary, people: int) -> None:
    assert people_seen(s) == people


def test_site_reading_adds_cameras_up() -> None:
    assert site_reading([summary("a", 3, 1), summary("b", 1, 3)]) == (0.5, 8)
    assert site_reading([]) == (None, 0)


class FakeStore:
    """The alert calls of Store: record_alert and active_alerts, kept in memory."""

    def __init__(self) -> None:
        self.recorded: list[tuple[str, dict[str, Any]]] = []
        self.active: dict[str, dict[str, Any]] = {}
        self.fail = False

    def record_alert(self, subject: str, event: dict[str, Any]) -> str:
        if self.fail:
            import redis

            raise redis.ConnectionError("down")
        self.recorded.append((subject, json.loads(json.dumps(event))))
        if event["state"] == "start":
            self.active[subject] = event
        else:
            self.active.pop(subject, None)
        return f"{len(self.recorded)}-0"

    def active_alerts(self) -> dict[str, dict[str, Any]]:
        return dict(self.active)


CAMERAS_ONLY = AlertOverride(enabled=False)


def engine(config: AlertsConfig | None = None) -> tuple[AlertEngine, FakeStore, list[dict[str, Any]]]:
    store, emitted = FakeStore(), []
    eng = AlertEngine(
        store,  # type: ignore[arg-type]
        config or AlertsConfig(for_s=0, min_people=2),
        site_name="airport",
        window_minutes=15,
        emit=emitted.append,
    )
    return eng, store, emitted


def test_engine_starts_camera_and_site_alerts_and_ends_them() -> None:
    eng, store, emitted = engine()
    events = eng.tick([summary("gate-a", 1, 3, name="Gate A"), summary("gate-b", 20, 0)], 1_000)
    assert [(e["scope"], e["camera"], e["state"]) for e in events] == [("camera", "gate-a", "start")]
    assert emitted == events and store.recorded[0][0] == camera_subject("gate-a")
    start = events[0]
    assert start["name"] == "Gate A" and start["compliance"] == 0.25 and start["people"] == 4
    assert start["alert_id"] == "camera:gate-a@1000" and start["id"] == "1-0"
    assert (start["compliance_below"], start["min_people"], start["window_minutes"]) == (0.8, 2, 15)
    assert start["text"].startswith("ALERT Gate A: compliance 25% below 80%")

    site_low = eng.tick([summary("gate-a", 1, 3), summary("gate-b", 9, 2)], 2_000)  # 10 of 15 masked
    assert [(e["scope"], e["name"]) for e in site_low] == [("site", "airport")]
    assert eng.tick([summary("gate-a", 1, 3), summary("gate-b", 9, 2)], 3_000) == [], "no repeats while it holds"

    ends = eng.tick([summary("gate-a", 9, 0), summary("gate-b", 9, 0)], 5_000)
    assert [(e["alert_id"], e["reason"], e["duration_s"]) for e in ends] == [
        ("camera:gate-a@1000", REASON_RECOVERED, 4.0),
        ("site@2000", REASON_RECOVERED, 3.0),
    ]
    assert ends[0]["text"].startswith("RESOLVED gate-a: recovered") and store.active == {}


def test_engine_continues_alerts_another_replica_started() -> None:
    eng, store, _ = engine(AlertsConfig(for_s=0, min_people=2, site=CAMERAS_ONLY))
    store.active[camera_subject("gate-a")] = {"state": "start", "camera": "gate-a", "started_ms": 500}
    assert eng.tick([summary("gate-a", 1, 3)], 1_000) == [], "already in progress: no second start"
    (end,) = eng.tick([summary("gate-a", 9, 0)], 2_000)
    assert end["alert_id"] == "camera:gate-a@500" and end["duration_s"] == 1.5


def test_engine_ends_an_alert_whose_camera_is_gone_and_forgets_ones_ended_elsewhere() -> None:
    eng, store, _ = engine(AlertsConfig(for_s=10, clear_for_s=0, min_people=2, site=CAMERAS_ONLY))
    store.active[camera_subject("old")] = {"state": "start", "camera": "old", "started_ms": 1}
    (end,) = eng.tick([], 1_000)
    assert end["camera"] == "old" and end["reason"] == REASON_TOO_FEW

    store.active[camera_subject("gate-a")] = {"state": "start", "camera": "gate-a", "started_ms": 1_500}
    assert eng.tick([summary("gate-a", 1, 3)], 2_000) == []
    store.active.clear()  # another replica ended it
    assert eng.tick([summary("gate-a", 1, 3)], 3_000) == [], "low again, but for_s counts from now"
    assert eng.states[camera_subject("gate-a")].pending_since_ms == 3_000


def test_engine_restarts_timers_after_a_gap_and_after_redis_fails() -> None:
    eng, store, _ = engine(AlertsConfig(for_s=10, min_people=2, site=CAMERAS_ONLY))
    eng.tick([summary("gate-a", 1, 3)], 0)
    assert eng.tick([summary("gate-a", 1, 3)], 60_000, max_gap_ms=20_000) == [], "a gap: the minute was not watched"
    store.fail = True
    with pytest.raises(Exception, match="down"):
        eng.tick([summary("gate-a", 1, 3)], 70_000, max_gap_ms=20_000)
    assert eng.states == {}
    store.fail = False
    assert eng.tick([summary("gate-a", 1, 3)], 75_000, max_gap_ms=20_000) == []
    assert [e["state"] for e in eng.tick([summary("gate-a", 1, 3)], 85_000, max_gap_ms=20_000)] == ["start"]


def test_alert_text_for_people() -> None:
    start = {"state": "start", "name": "Gate", "compliance": 0.625, "compliance_below": 0.8, "for_s": 60.0,
             "people": 8, "window_minutes": 15}  # fmt: skip
    assert alert_text(start) == "ALERT Gate: compliance 62.5% below 80% for 60 s (8 people in the last 15 min)"
    end = {"state": "end", "name": "Gate", "reason": "too_few_people", "compliance": None, "duration_s": 90.0}
    assert alert_text(end) == "RESOLVED Gate: too few people to judge, compliance — after 90 s"


# ---- the webhook sender's retries (the HTTP itself is in the integration test) -----------------------


class Poster:
    def __init__(self, answers: list[int | Exception]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []

    def __call__(self, url: str, body: bytes, timeout_s: float) -> int:
        self.calls.append({"url": url, "body": json.loads(body), "timeout_s": timeout_s})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.mark.parametrize(
    ("answers", "retries", "delivered", "calls"),
    [
        ([200], 3, True, 1),
        ([503, OSError("reset"), 204], 3, True, 3),
        ([TimeoutError("slow"), 429, 408, 500], 3, False, 4),
        ([500, 500], 1, False, 2),
        ([404], 3, False, 1),  # a wrong URL is not retried
        ([400], 3, False, 1),
    ],
)
def test_webhook_retries_what_may_pass_later(
    answers: list[int | Exception], retries: int, delivered: bool, calls: int
) -> None:
    poster = Poster(answers)
    sender = WebhookSender(
        "https://h.example/x", timeout_s=2.5, retries=retries, host="https://h.example", poster=poster, first_backoff_s=0
    )
    assert sender._deliver({"alert_id": "a", "state": "start"}) is delivered
    assert len(poster.calls) == calls
    assert poster.calls[0] == {"url": "https://h.example/x", "body": {"alert_id": "a", "state": "start"}, "timeout_s": 2.5}
    assert sender.stats["sent" if delivered else "failed"] == 1


def test_webhook_queue_never_blocks_the_caller() -> None:
    sender = WebhookSender("https://h.example/x", timeout_s=1, retries=0, host="h", poster=Poster([]))
    results = [sender.send({"alert_id": str(i)}) for i in range(250)]  # not started: nothing drains the queue
    assert results.count(True) == 200 and sender.stats["dropped"] == 50
