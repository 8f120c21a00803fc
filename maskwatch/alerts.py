"""Compliance alerts: the site file's `alerts:` rules and the hysteresis that turns readings into start/end events.

A rule fires when compliance stays below `compliance_below`, with at least `min_people` people seen, for
`for_s` seconds; it clears when compliance stays at or above `clear_above` (or too few people are seen) for
`clear_for_s` seconds. Between the two thresholds an alert keeps its state, so a figure wobbling around one
threshold neither starts nor ends one. `alerts:` in the site file sets the rule for every camera and for the
whole site; `cameras:` and `site:` under it override single fields:

    alerts:
      compliance_below: 0.8
      clear_above: 0.85
      for_s: 60
      min_people: 5
      webhook_url: https://hooks.example.org/maskwatch
      site: {min_people: 20}
      cameras:
        gate-a: {compliance_below: 0.9, clear_above: 0.95}
        canteen: {enabled: false}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from maskwatch.frames import is_valid_camera_id

SITE_SUBJECT = "site"
CAMERA_SUBJECT_PREFIX = "camera:"

Transition = Literal["start", "end"]
# why an alert started or ended
REASON_BELOW = "below_threshold"
REASON_RECOVERED = "recovered"
REASON_TOO_FEW = "too_few_people"
REASON_DISABLED = "disabled"


def camera_subject(cid: str) -> str:
    """The key of a camera's alert (in `mw:alerts:active` and in every event)."""
    return CAMERA_SUBJECT_PREFIX + cid


class AlertOverride(BaseModel):
    """Fields of one camera's (or the site's) rule that differ from the `alerts:` defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = Field(None, description="false turns this camera's (or the site's) alert off")
    compliance_below: float | None = Field(None, ge=0, le=1)
    clear_above: float | None = Field(None, ge=0, le=1)
    for_s: float | None = Field(None, ge=0, le=86_400)
    clear_for_s: float | None = Field(None, ge=0, le=86_400)
    min_people: int | None = Field(None, ge=1, le=1_000_000)


@dataclass(frozen=True)
class AlertRule:
    """The rule in force for one subject (a camera, or the site), defaults and overrides merged."""

    enabled: bool
    compliance_below: float
    clear_above: float
    for_s: float
    clear_for_s: float
    min_people: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "compliance_below": self.compliance_below,
            "clear_above": self.clear_above,
            "for_s": self.for_s,
            "clear_for_s": self.clear_for_s,
            "min_people": self.min_people,
        }


class AlertsConfig(BaseModel):
    """The site file's `alerts:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="false keeps the rules but evaluates none")
    compliance_below: float = Field(0.8, ge=0, le=1, description="An alert starts below this compliance")
    clear_above: float = Field(
        0.85, ge=0, le=1, description="A started alert ends at or above this compliance (not below compliance_below)"
    )
    for_s: float = Field(60.0, ge=0, le=86_400, description="Seconds compliance must stay low before an alert starts")
    clear_for_s: float | None = Field(
        None, ge=0, le=86_400, description="Seconds compliance must stay recovered before it ends (default: for_s)"
    )
    min_people: int = Field(
        5, ge=1, le=1_000_000, description="Fewest people in the window for a compliance figure to count"
    )
    webhook_url: str | None = Field(
        None, max_length=2000, description="http(s) URL that receives every alert start and end as a JSON POST"
    )
    webhook_timeout_s: float = Field(5.0, gt=0, le=60, description="Deadline of one webhook POST")
    webhook_retries: int = Field(3, ge=0, le=10, description="Retries of a failed webhook POST (1 s, 2 s, 4 s… apart)")
    site: AlertOverride = Field(default_factory=AlertOverride, description="Overrides for the site-wide alert")
    cameras: dict[str, AlertOverride] = Field(default_factory=dict, description="Overrides per camera id")

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("webhook_url must be an http:// or https:// URL with a host")
        return v.strip()

    @field_validator("cameras")
    @classmethod
    def _camera_ids(cls, v: dict[str, AlertOverride]) -> dict[str, AlertOverride]:
        bad = [cid for cid in v if not is_valid_camera_id(cid)]
        if bad:
            raise ValueError(f"not a camera id: {', '.join(map(repr, bad))}")
        return v

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> AlertsConfig:
        subjects: list[tuple[str, AlertOverride | None]] = [
            ("alerts", None),
            ("alerts.site", self.site),
            *((f"alerts.cameras.{cid}", o) for cid, o in self.cameras.items()),
        ]
        for where, override in subjects:
            r = self._merge(override)
            if r.clear_above < r.compliance_below:
                raise ValueError(
                    f"{where}: clear_above ({r.clear_above}) must not be below compliance_below ({r.compliance_below})"
                )
        return self

    def _merge(self, o: AlertOverride | None) -> AlertRule:
        def pick(name: str) -> Any:
            v = getattr(o, name) if o is not None else None
            return getattr(self, name) if v is None else v

        clear_for = o.clear_for_s if o is not None and o.clear_for_s is not None else self.clear_for_s
        for_s = float(pick("for_s"))
        return AlertRule(
            enabled=bool(self.enabled and pick("enabled")),
            compliance_below=float(pick("compliance_below")),
            clear_above=float(pick("clear_above")),
            for_s=for_s,
            clear_for_s=float(clear_for) if clear_for is not None else for_s,
            min_people=int(pick("min_people")),
        )

    def rule_for(self, camera: str | None) -> AlertRule:
        """The rule of camera `camera`, or of the whole site when None."""
        return self._merge(self.site if camera is None else self.cameras.get(camera))

    def webhook_host(self) -> str | None:
        """Where the webhook goes, for logs: scheme and host only (URLs often carry a secret in the path)."""
        if self.webhook_url is None:
            return None
        parts = urlsplit(self.webhook_url)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


@dataclass
class Hysteresis:
    """One subject's alert state. `update` takes each reading and says when an alert starts or ends.

    Readings count as low (enough people, compliance < compliance_below), recovered (enough people, compliance
    >= clear_above), too few people, or in between. Low readings for `for_s` start an alert; recovered or
    too-few-people readings for `clear_for_s` end it; a reading in between resets whichever timer runs.
    """

    firing: bool = False
    started_ms: int | None = None
    pending_since_ms: int | None = None
    clearing_since_ms: int | None = None
    reason: str | None = None

    def update(self, rule: AlertRule, compliance: float | None, people: int, now_ms: int) -> Transition | None:
        enough = compliance is not None and people >= rule.min_people
        if not rule.enabled:
            self.pending_since_ms = self.clearing_since_ms = None
            return self._end(REASON_DISABLED) if self.firing else None
        if not self.firing:
            if enough and compliance is not None and compliance < rule.compliance_below:
                if self.pending_since_ms is None:
                    self.pending_since_ms = now_ms
                if now_ms - self.pending_since_ms >= rule.for_s * 1000:
                    self.firing, self.started_ms, self.reason = True, now_ms, REASON_BELOW
                    self.pending_since_ms = None
                    return "start"
            else:
                self.pending_since_ms = None
            return None
        recovered = enough and compliance is not None and compliance >= rule.clear_above
        if recovered or not enough:
            if self.clearing_since_ms is None:
                self.clearing_since_ms = now_ms
            if now_ms - self.clearing_since_ms >= rule.clear_for_s * 1000:
                return self._end(REASON_RECOVERED if recovered else REASON_TOO_FEW)
        else:
            self.clearing_since_ms = None
        return None

    def _end(self, reason: str) -> Transition:
        self.firing, self.clearing_since_ms, self.reason = False, None, reason
        return "end"

    def resume(self, started_ms: int) -> None:
        """Continue an alert another process started (its start event is in Redis)."""
        if not self.firing:
            self.firing, self.started_ms, self.pending_since_ms = True, started_ms, None

    def forget(self) -> None:
        """Drop an alert ended elsewhere and any timer, as after a gap in the readings."""
        self.firing, self.started_ms = False, None
        self.pending_since_ms = self.clearing_since_ms = None
