"""Alert evaluation inside the live emitter: each system tick, the site's rules meet every camera's window figures.

Exactly one dashboard replica evaluates: the holder of `mw:alerts:leader` (and the emitter only ticks while
it leads, see live.py). A start or end is written to Redis (stream `mw:alerts`, hash `mw:alerts:active`) in
one transaction, then pushed as the Socket.IO `alert` event and handed to the webhook thread. Alerts in
progress live in Redis, so a replica that takes over continues them rather than starting them again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from dashboard.site import SiteView
from dashboard.webhook import WebhookSender
from maskwatch.alerts import (
    SITE_SUBJECT,
    AlertRule,
    AlertsConfig,
    Hysteresis,
    Transition,
    camera_subject,
)
from maskwatch.payloads import CameraSummary
from maskwatch.store import Store

logger = logging.getLogger(__name__)


def people_seen(summary: CameraSummary) -> int:
    """Different people in a camera summary's window (tracked persons; faces with a verdict from older workers)."""
    return summary.persons.get("persons", 0) or summary.window.people


def site_reading(summaries: list[CameraSummary]) -> tuple[float | None, int]:
    """(compliance, people) of the whole site: every camera's window added up."""
    masked = sum(s.window.with_mask for s in summaries)
    verdicts = sum(s.window.people for s in summaries)
    return (masked / verdicts if verdicts else None), sum(people_seen(s) for s in summaries)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}".removesuffix(".0") + "%"


def alert_text(event: dict[str, Any]) -> str:
    """One line for people (chat webhooks show `text`)."""
    who = event["name"]
    if event["state"] == "start":
        return (
            f"ALERT {who}: compliance {_pct(event['compliance'])} below {_pct(event['compliance_below'])} "
            f"for {event['for_s']:g} s ({event['people']} people in the last {event['window_minutes']} min)"
        )
    why = {"recovered": "recovered", "too_few_people": "too few people to judge", "disabled": "rule turned off"}
    return (
        f"RESOLVED {who}: {why.get(event['reason'], event['reason'])}, compliance {_pct(event['compliance'])} "
        f"after {event['duration_s']:g} s"
    )


class AlertEngine:
    """The rules of one site, one Hysteresis per subject, and what a transition does (Redis, socket, webhook)."""

    def __init__(
        self,
        store: Store,
        config: AlertsConfig,
        *,
        site_name: str,
        window_minutes: int,
        emit: Callable[[dict[str, Any]], None],
        webhook: WebhookSender | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.site_name = site_name
        self.window_minutes = window_minutes
        self.emit = emit
        self.webhook = webhook
        self.states: dict[str, Hysteresis] = {}
        self.stats = {"ticks": 0, "started": 0, "ended": 0}
        self._last_tick_ms: int | None = None

    def start(self) -> None:
        if self.webhook is not None:
            self.webhook.start()

    def stop(self) -> None:
        if self.webhook is not None:
            self.webhook.stop()

    def pause(self) -> None:
        """This replica stopped evaluating (another leads, or Redis failed): its timers are stale from here."""
        self.states.clear()
        self._last_tick_ms = None

    def tick(self, summaries: list[CameraSummary], now_ms: int, max_gap_ms: int | None = None) -> list[dict[str, Any]]:
        """Evaluate every rule on the window figures in `summaries`; returns the events recorded.

        A gap of more than `max_gap_ms` since the previous tick restarts the timers: what happened in
        between was not watched.
        """
        if self._last_tick_ms is not None and max_gap_ms is not None and now_ms - self._last_tick_ms > max_gap_ms:
            self.pause()
        self._last_tick_ms = now_ms
        self.stats["ticks"] += 1
        active = self.store.active_alerts()
        self._sync(active)
        readings: dict[str, tuple[str | None, CameraSummary | None, float | None, int]] = {}
        for s in summaries:
            readings[camera_subject(s.camera)] = (s.camera, s, s.compliance, people_seen(s))
        comp, people = site_reading(summaries)
        readings[SITE_SUBJECT] = (None, None, comp, people)
        for subject in active:  # an alert whose camera is gone still needs an end
            readings.setdefault(subject, (active[subject].get("camera"), None, None, 0))

        events = []
        for subject, (cid, summary, compliance, seen) in readings.items():
            rule = self.config.rule_for(cid)
            state = self.states.setdefault(subject, Hysteresis())
            started = state.started_ms
            try:
                transition = state.update(rule, compliance, seen, now_ms)
                if transition is None:
                    continue
                event = self._event(
                    transition, subject, cid, summary, rule, compliance, seen, now_ms, started, state.reason
                )
                event["id"] = self.store.record_alert(subject, event)
            except (redis.RedisError, OSError):
                # Redis is not where memory says: re-read what is active next tick rather than drift apart
                self.pause()
                raise
            self.stats["started" if transition == "start" else "ended"] += 1
            logger.info(
                "alert %s alert=%s compliance=%s people=%d reason=%s",
                transition,
                event["alert_id"],
                event["compliance"],
                seen,
                event["reason"],
            )
            self.emit(event)
            if self.webhook is not None:
                self.webhook.send(event)
            events.append(event)
        return events

    def _sync(self, active: dict[str, dict[str, Any]]) -> None:
        """Make memory agree with the alerts Redis holds in progress (another replica may have led meanwhile)."""
        for subject, event in active.items():
            self.states.setdefault(subject, Hysteresis()).resume(int(event.get("started_ms", 0)))
        for subject, state in self.states.items():
            if state.firing and subject not in active:
                state.forget()

    def _event(
        self,
        transition: Transition,
        subject: str,
        cid: str | None,
        summary: CameraSummary | None,
        rule: AlertRule,
        compliance: float | None,
        people: int,
        now_ms: int,
        started_before: int | None,
        reason: str | None,
    ) -> dict[str, Any]:
        started_ms = now_ms if transition == "start" else (started_before or now_ms)
        name = ((summary.name if summary else "") or cid) if cid is not None else (self.site_name or "Site")
        event: dict[str, Any] = {
            "alert_id": f"{subject}@{started_ms}",
            "state": transition,
            "scope": "site" if cid is None else "camera",
            "camera": cid,
            "name": name,
            "zone": summary.zone if summary else "",
            "site": self.site_name,
            "compliance": None if compliance is None else round(compliance, 4),
            "people": people,
            "window_minutes": self.window_minutes,
            **rule.as_dict(),
            "reason": reason,
            "started_ms": started_ms,
            "ts_ms": now_ms,
        }
        if transition == "end":
            event["ended_ms"] = now_ms
            event["duration_s"] = round((now_ms - started_ms) / 1000, 1)
        event["text"] = alert_text(event)
        return event


def build_engine(
    store: Store, site: SiteView, window_minutes: int, emit: Callable[[dict[str, Any]], None]
) -> AlertEngine | None:
    """The engine for `site`'s rules (with a webhook sender when it names a URL); None when it has no alerts."""
    config = site.alerts
    if config is None or not config.enabled:
        return None
    webhook = None
    if config.webhook_url is not None:
        webhook = WebhookSender(
            config.webhook_url,
            timeout_s=config.webhook_timeout_s,
            retries=config.webhook_retries,
            host=config.webhook_host() or "",
        )
    logger.info(
        "alert rules loaded site=%s compliance_below=%s clear_above=%s for_s=%s min_people=%d cameras_overridden=%d webhook=%s",
        site.name,
        config.compliance_below,
        config.clear_above,
        config.for_s,
        config.min_people,
        len(config.cameras),
        config.webhook_host() or "off",
    )
    return AlertEngine(store, config, site_name=site.name, window_minutes=window_minutes, emit=emit, webhook=webhook)
