"""Live pushes on Socket.IO `/live`: follows `mw:updates` and emits throttled camera_update, violation, system and alert events."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import redis
from flask_socketio import SocketIO

from dashboard import access
from dashboard.alerts import build_engine
from dashboard.settings import DashboardSettings
from dashboard.site import SiteView
from maskwatch.payloads import EV_ALERT, EV_CAMERA, EV_SYSTEM, EV_VIOLATION, NAMESPACE, CameraSummary, LiveNotice
from maskwatch.store import Store, camera_summaries, camera_summary

logger = logging.getLogger(__name__)

MAX_VIOLATIONS_PER_BATCH = 20
THROUGHPUT_SPAN_S = 10.0
DRAIN_LIMIT = 500
POLL_S = 0.25


def snapshot_url(cid: str, episode_id: str) -> str:
    """Where the dashboard serves an episode's best snapshot (GET /api/cameras/{id}/snapshots/{episode}.jpg)."""
    return f"/api/cameras/{cid}/snapshots/{episode_id}.jpg"


def episode_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """An episode row (`maskwatch.store.episode_row` or a worker's notice) as the API and `violation` event show it."""
    out = {k: v for k, v in row.items() if k != "snapshot"}
    has_snapshot = bool(row.get("snapshot_ms"))
    out["snapshot_url"] = snapshot_url(str(row.get("camera", "")), str(row.get("id", ""))) if has_snapshot else None
    return out


def scoped(summaries: list[CameraSummary], who: access.Principal) -> list[CameraSummary]:
    """The summaries of the cameras `who` may see."""
    return [s for s in summaries if who.sees(s.camera, s.zone)]


def scoped_system(state: dict[str, Any], who: access.Principal) -> dict[str, Any]:
    """A `system` event cut to `who`'s scope: its cameras' alerts only, no producers (they list cameras)."""
    if not who.scoped:
        return state
    ids = set(state["cameras"]["ids"])
    alerts = state.get("alerts", {})
    active = [a for a in alerts.get("active", []) if a.get("camera") in ids]
    return {**state, "producers": [], "alerts": {**alerts, "active": active}}


def all_summaries(store: Store, window_minutes: int, now_ms: int | None = None) -> list[CameraSummary]:
    """camera_summary for every known camera, by id (the same call `maskwatch stats` makes)."""
    return camera_summaries(store, window_minutes, now_ms)


def _value(v: str) -> Any:
    """A heartbeat field as the number or JSON value it spells, else the string."""
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    if v[:1] in ("{", "["):
        try:
            return json.loads(v)
        except ValueError:
            pass
    return v


# Heartbeat fields kept from viewers: they name machines, processes and files (the CLI shows them to operators).
PRIVATE_HEARTBEAT_FIELDS = frozenset({"host", "pid", "site_file", "metrics_port", "reload_msg"})


def heartbeat_rows(beats: dict[str, dict[str, str]], now_ms: int) -> list[dict[str, Any]]:
    """Heartbeats as rows: id, age_s, fps, lag, plus the other fields the service wrote but the private ones."""
    rows = []
    for ident, fields in beats.items():
        row: dict[str, Any] = {k: _value(v) for k, v in fields.items() if k not in PRIVATE_HEARTBEAT_FIELDS}
        ts = row.get("ts_ms")
        row["id"] = ident
        row["age_s"] = round((now_ms - ts) / 1000, 1) if isinstance(ts, int) else None
        row.setdefault("fps", None)
        row.setdefault("lag", None)
        rows.append(row)
    return rows


def system_state(
    store: Store,
    summaries: list[CameraSummary],
    *,
    window_minutes: int,
    stale_after_s: float,
    throughput_fps: float | None,
    now_ms: int,
    alerting: bool = False,
) -> dict[str, Any]:
    """The `system` event: workers and producers (from heartbeats), site-wide window counts, throughput, alerts.

    `alerts.active` lists the alerts in progress (their start events) as Redis holds them, so every replica
    and every reconnecting page agrees on them; it is empty when the site file has no `alerts:`.
    """
    window: dict[str, int] = {}
    for s in summaries:
        for k, v in s.window.as_dict().items():
            window[k] = window.get(k, 0) + v
    # people are different people (one per track); face verdicts count every face in every frame
    faces = window.get("with_mask", 0) + window.get("without_mask", 0) + window.get("mask_worn_incorrectly", 0)
    online = [
        s.camera for s in summaries if s.status != "offline" and s.data_age_s is not None and s.data_age_s <= stale_after_s
    ]
    workers = heartbeat_rows(store.heartbeats("worker"), now_ms)
    lags = [w["lag"] for w in workers if isinstance(w["lag"], (int, float))]
    return {
        "ts_ms": now_ms,
        "window_minutes": window_minutes,
        "cameras": {"total": len(summaries), "online": len(online), "ids": [s.camera for s in summaries]},
        "window": window,
        "people": window.get("persons", 0),
        "face_verdicts": faces,
        "compliance": round(window.get("with_mask", 0) / faces, 4) if faces else None,
        "workers": workers,
        "producers": heartbeat_rows(store.heartbeats("producer"), now_ms),
        "lag": sum(lags) if lags else None,
        "throughput_fps": None if throughput_fps is None else round(throughput_fps, 2),
        "alerts": {"enabled": alerting, "active": list(store.active_alerts().values()) if alerting else []},
    }


class Throttle:
    """Per-key rate limit with a trailing edge: a key marked while too recent is emitted once it is due."""

    def __init__(self, min_interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._pending: set[str] = set()

    def mark(self, key: str) -> None:
        self._pending.add(key)

    def take_due(self) -> list[str]:
        """Pending keys allowed now; they count as emitted at this instant."""
        now = self.clock()
        due = sorted(k for k in self._pending if now - self._last.get(k, -1e18) >= self.min_interval_s)
        for k in due:
            self._pending.discard(k)
            self._last[k] = now
        return due

    def next_due_in(self) -> float | None:
        """Seconds until the earliest pending key is allowed; None when nothing is pending."""
        if not self._pending:
            return None
        now = self.clock()
        return max(0.0, min(self._last.get(k, -1e18) + self.min_interval_s - now for k in self._pending))

    def clear(self) -> None:
        self._pending.clear()


class LeaderLock:
    """One holder among replicas: `SET key id NX PX ttl`, renewed by the holder, released on exit."""

    _RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

    def __init__(self, client: redis.Redis, key: str, ident: str, ttl_s: float) -> None:
        self.r = client
        self.key = key
        self.ident = ident
        self.ttl_ms = int(ttl_s * 1000)
        self.held = False

    def hold(self) -> bool:
        """Acquire the lock or renew it; True while this replica holds it."""
        if self.held and self.r.eval(self._RENEW, 1, self.key, self.ident, self.ttl_ms):
            return True
        self.held = bool(self.r.set(self.key, self.ident, nx=True, px=self.ttl_ms))
        return self.held

    def release(self) -> None:
        if self.held:
            self.r.eval(self._RELEASE, 1, self.key, self.ident)
            self.held = False


class LiveEmitter:
    """The background task that turns worker batch notices into Socket.IO events.

    Without a message queue every replica emits to its own clients. With one, only the holder of the
    leader lock follows `mw:updates`; its emits reach every replica's clients through the queue.
    """

    def __init__(
        self,
        socketio: SocketIO,
        store: Store,
        settings: DashboardSettings,
        replica_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        site: SiteView | None = None,
    ) -> None:
        self.socketio = socketio
        self.store = store
        self.settings = settings
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self.clock = clock
        self.throttle = Throttle(1.0 / settings.camera_update_hz, clock)
        self.lock = (
            LeaderLock(store.r, store.keys.dashboard_leader(), self.replica_id, settings.leader_ttl_s)
            if settings.message_queue
            else None
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None
        self._frames: deque[tuple[float, int]] = deque()
        self._started_at = clock()
        self._next_system = 0.0
        self._next_lock_check = 0.0
        self._is_leader = self.lock is None
        # Alerts are evaluated by one replica whatever the mode: the holder of their own lock.
        self.alerts = (
            build_engine(store, site, settings.window_minutes, emit=self._emit_alert) if site is not None else None
        )
        self.alerts_lock = (
            LeaderLock(
                store.r,
                store.keys.alerts_leader(),
                self.replica_id,
                max(settings.leader_ttl_s, 3 * settings.system_interval_s),
            )
            if self.alerts is not None
            else None
        )
        self.stats = {"updates": 0, "bad_updates": 0, "camera_updates": 0, "violations": 0, "systems": 0, "alerts": 0}
        self.redis_ok = True
        self.site = site
        self._zones: dict[str, str] = {}
        self.last_update_ms: int | None = None
        self.last_system: dict[str, Any] | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.alerts is not None:
            self.alerts.start()
        self._thread = threading.Thread(target=self._run, name="live-emitter", daemon=True)
        self._thread.start()
        logger.info("live emitter started replica=%s leader_election=%s", self.replica_id, self.lock is not None)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("live emitter did not stop within %.1fs", timeout_s)
        self._unsubscribe()
        for lock in (self.lock, self.alerts_lock):
            if lock is None:
                continue
            try:
                lock.release()
            except redis.RedisError as exc:
                logger.warning("could not release lock key=%s error=%s", lock.key, exc)
        if self.alerts is not None:
            self.alerts.stop()
        logger.info("live emitter stopped replica=%s", self.replica_id)

    def state(self) -> dict[str, Any]:
        """What /api/health shows about live pushes."""
        return {
            "replica": self.replica_id,
            "running": self._thread is not None and self._thread.is_alive(),
            "leader": self._is_leader,
            "leader_election": self.lock is not None,
            "subscribed": self._pubsub is not None,
            "redis_ok": self.redis_ok,
            "last_update_ms": self.last_update_ms,
            **self.stats,
            "alerting": self.alerts is not None,
            "alerts_leader": self.alerts_lock is not None and self.alerts_lock.held,
            "webhook": dict(self.alerts.webhook.stats) if self.alerts is not None and self.alerts.webhook else None,
        }

    # ---- what a new client gets -------------------------------------------------------------

    def send_snapshot(self, sid: str, who: access.Principal = access.EVERYONE) -> None:
        """Every camera's current summary and the system state (within `who`'s scope), to one client (on connect)."""
        now_ms = int(time.time() * 1000)
        summaries = scoped(all_summaries(self.store, self.settings.window_minutes, now_ms), who)
        for s in summaries:
            self.socketio.emit(EV_CAMERA, s.to_json(), namespace=NAMESPACE, to=sid)
        last = self.last_system
        throughput = last["throughput_fps"] if last is not None and not who.scoped else None
        state = scoped_system(self._system(summaries, now_ms, throughput), who)
        self.socketio.emit(EV_SYSTEM, state, namespace=NAMESPACE, to=sid)

    # ---- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if not self._leader():
                    self._stop.wait(self._lock_period())
                    continue
                self._subscribe()
                self._pump(self._wait_s())
                self._emit_due()
                if self.clock() >= self._next_system:
                    self._emit_system()
            except (redis.RedisError, OSError) as exc:
                if self.redis_ok:
                    logger.warning("live updates paused, Redis unreachable error=%s", exc)
                self.redis_ok = False
                self._unsubscribe()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 15.0)
                continue
            if not self.redis_ok:
                logger.info("live updates resumed")
                self.redis_ok = True
            backoff = 0.5

    def _lock_period(self) -> float:
        return self.settings.leader_ttl_s / 3

    def _leader(self) -> bool:
        if self.lock is None:
            return True
        now = self.clock()
        if now >= self._next_lock_check:
            self._next_lock_check = now + self._lock_period()
            was = self._is_leader
            self._is_leader = self.lock.hold()
            if self._is_leader != was:
                logger.info("live emitter leadership replica=%s leader=%s", self.replica_id, self._is_leader)
            if not self._is_leader:
                self._unsubscribe()
                self.throttle.clear()
                if self.alerts is not None:
                    self.alerts.pause()
        return self._is_leader

    def _subscribe(self) -> None:
        if self._pubsub is not None:
            return
        ps = self.store.r.pubsub(ignore_subscribe_messages=True)
        ps.subscribe(self.store.keys.updates())
        self._pubsub = ps
        # Anything published while we were not listening is lost: bring every camera up to date.
        for cid in self.store.camera_ids():
            self.throttle.mark(cid)

    def _unsubscribe(self) -> None:
        ps, self._pubsub = self._pubsub, None
        if ps is not None:
            try:
                ps.close()
            except (redis.RedisError, OSError) as exc:
                logger.debug("closing pubsub failed error=%s", exc)

    def _wait_s(self) -> float:
        waits = [POLL_S, max(0.0, self._next_system - self.clock())]
        due = self.throttle.next_due_in()
        if due is not None:
            waits.append(due)
        if self.lock is not None:
            waits.append(max(0.0, self._next_lock_check - self.clock()))
        return max(0.01, min(waits))

    def _pump(self, timeout_s: float) -> None:
        msg = self._pubsub.get_message(timeout=timeout_s)
        n = 0
        while msg is not None and n < DRAIN_LIMIT:
            if msg.get("type") == "message":
                self._on_update(msg["data"])
            n += 1
            msg = self._pubsub.get_message(timeout=0)

    def _on_update(self, raw: bytes | str) -> None:
        try:
            notice = LiveNotice.from_json(raw)
        except ValueError as exc:
            self.stats["bad_updates"] += 1
            logger.debug("ignoring malformed update error=%s", exc)
            return
        self.stats["updates"] += 1
        self.last_update_ms = int(time.time() * 1000)
        now = self.clock()
        for cid, counted in notice.cameras.items():
            self.throttle.mark(cid)
            if counted.frames > 0:
                self._frames.append((now, counted.frames))
        for v in notice.violations[:MAX_VIOLATIONS_PER_BATCH]:
            rooms = access.rooms_for_camera(v["camera"], self._zone(v["camera"]))
            self.socketio.emit(EV_VIOLATION, episode_view(v), namespace=NAMESPACE, to=rooms)
            self.stats["violations"] += 1

    def _emit_due(self) -> None:
        due = self.throttle.take_due()
        if not due:
            return
        now_ms = int(time.time() * 1000)
        retired = set(self.store.retired_camera_ids())  # a late frame of a retired camera does not bring it back
        for cid in due:
            if cid in retired:
                continue
            summary = camera_summary(self.store, cid, self.settings.window_minutes, now_ms)
            self._zones[cid] = summary.zone
            rooms = access.rooms_for_camera(cid, summary.zone)
            self.socketio.emit(EV_CAMERA, summary.to_json(), namespace=NAMESPACE, to=rooms)
            self.stats["camera_updates"] += 1

    def _throughput(self) -> float | None:
        now = self.clock()
        while self._frames and now - self._frames[0][0] > THROUGHPUT_SPAN_S:
            self._frames.popleft()
        span = min(THROUGHPUT_SPAN_S, now - self._started_at)
        if span < 1.0:
            return None
        return sum(f for _, f in self._frames) / span

    def _system(self, summaries: list[CameraSummary], now_ms: int, throughput: float | None) -> dict[str, Any]:
        state = system_state(
            self.store,
            summaries,
            window_minutes=self.settings.window_minutes,
            stale_after_s=self.settings.stale_after_s,
            throughput_fps=throughput,
            now_ms=now_ms,
            alerting=self.alerts is not None,
        )
        state["replica"] = self.replica_id
        return state

    def _evaluate_alerts(self, summaries: list[CameraSummary], now_ms: int) -> None:
        """Alert rules on this tick's figures, when this replica holds the alerts lock."""
        if self.alerts is None or self.alerts_lock is None:
            return
        if not self.alerts_lock.hold():
            self.alerts.pause()
            return
        # a longer gap than the lock's expiry: another replica may have evaluated meanwhile
        self.alerts.tick(summaries, now_ms, max_gap_ms=self.alerts_lock.ttl_ms)

    def _zone(self, cid: str) -> str:
        """A camera's zone (remembered from its summaries; read from Redis the first time)."""
        if cid not in self._zones:
            self._zones.update(self.store.camera_zones([cid]))
        return self._zones.get(cid, "")

    def _emit_alert(self, event: dict[str, Any]) -> None:
        cid = event.get("camera")
        rooms = access.rooms_for_camera(cid, self._zone(cid)) if isinstance(cid, str) and cid else [access.SITE_ROOM]
        self.socketio.emit(EV_ALERT, event, namespace=NAMESPACE, to=rooms)
        self.stats["alerts"] += 1

    def _emit_system(self) -> None:
        self._next_system = self.clock() + self.settings.system_interval_s
        now_ms = int(time.time() * 1000)
        summaries = all_summaries(self.store, self.settings.window_minutes, now_ms)
        self._evaluate_alerts(summaries, now_ms)
        state = self._system(summaries, now_ms, self._throughput())
        self.last_system = state
        self.socketio.emit(EV_SYSTEM, state, namespace=NAMESPACE, to=access.SITE_ROOM)
        # each scoped token's sockets get the system event of its own cameras
        for entry in self.site.access if self.site is not None else ():
            who = access.from_entry(entry)
            if who.scoped:
                mine = scoped_system(self._system(scoped(summaries, who), now_ms, None), who)
                self.socketio.emit(EV_SYSTEM, mine, namespace=NAMESPACE, to=access.scope_room(who.name))
        self.stats["systems"] += 1
