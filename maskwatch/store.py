"""The Redis schema (Contract 3): key names, the atomic batch write, and every read the services and CLI make."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from maskwatch.detections import COUNT_FIELDS, Counts
from maskwatch.payloads import PERSON_FIELDS, CameraSummary, LiveNotice

DEFAULT_PREFIX = "mw:"
MINUTE_TTL_S = 7 * 24 * 3600
# hourly and daily buckets (per camera and per zone): months of history at a few hundred bytes a bucket
HISTORY_TTL_S = 400 * 24 * 3600
# violation episodes and their best snapshot
EPISODE_TTL_S = 30 * 24 * 3600
# an episode stored open whose last sighting is older than its grace by this much is shown closed: the worker
# that tracked it is gone (a crash, a rebalance) and nobody else will close it
EPISODE_ORPHAN_SLACK_MS = 60_000
LATEST_TTL_S = 120
SNAPSHOT_TTL_S = 24 * 3600
HEARTBEAT_TTL_S = 15
ALERTS_MAXLEN = 10_000

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")

STATUS_ONLINE = "online"
STATUS_RECONNECTING = "reconnecting"
STATUS_OFFLINE = "offline"
STATUS_RETIRED = "retired"  # no longer part of the site (Keys.retired)


class Keys:
    """Builds every key name; nobody else spells one."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix or " " in prefix:
            raise ValueError(f"bad key prefix {prefix!r}")
        self.prefix = prefix

    def cameras(self) -> str:
        return f"{self.prefix}cameras"

    def retired(self) -> str:
        """Set: cameras retired from the site (removed from the site file, or `maskwatch cameras remove`); they
        stay in `cameras` so their history answers by id, but leave every listing and the site's figures."""
        return f"{self.prefix}cameras:retired"

    def camera(self, cid: str) -> str:
        return f"{self.prefix}camera:{cid}"

    def totals(self, cid: str) -> str:
        return f"{self.prefix}totals:{cid}"

    def minute(self, cid: str, epoch_minute: int) -> str:
        return f"{self.prefix}m:{cid}:{epoch_minute}"

    def latest(self, cid: str) -> str:
        return f"{self.prefix}latest:{cid}"

    def hour(self, cid: str, epoch_hour: int) -> str:
        return f"{self.prefix}h:{cid}:{epoch_hour}"

    def day(self, cid: str, epoch_day: int) -> str:
        return f"{self.prefix}d:{cid}:{epoch_day}"

    def bucket(self, level: str, cid: str, index: int) -> str:
        """A camera's bucket of a window level (`WINDOW_LEVELS`: day, hour, minute) by its epoch index."""
        return {"day": self.day, "hour": self.hour, "minute": self.minute}[level](cid, index)

    def zone_hour(self, zone: str, epoch_hour: int) -> str:
        """Hash: the same fields as a camera's hour, summed over the cameras in `zone` (the site file's name)."""
        return f"{self.prefix}zh:{zone}:{epoch_hour}"

    def zone_day(self, zone: str, epoch_day: int) -> str:
        return f"{self.prefix}zd:{zone}:{epoch_day}"

    def episodes(self, cid: str) -> str:
        """Sorted set: a camera's violation episode ids scored by their first sighting (ms)."""
        return f"{self.prefix}episodes:{cid}"

    def episode(self, cid: str, eid: str) -> str:
        """Hash: one violation episode (`Episode.to_fields`)."""
        return f"{self.prefix}episode:{cid}:{eid}"

    def snapshot(self, cid: str, ident: str) -> str:
        return f"{self.prefix}snap:{cid}:{ident}"

    def offsets(self, group: str, topic: str) -> str:
        return f"{self.prefix}offsets:{group}:{topic}"

    def seen(self, group: str, topic: str) -> str:
        """Hash `{partition}:{camera}` -> `{next mw-seq}:{producer run}`: the frames of a topic already read (a producer
        retry can write a frame twice; the second copy is skipped). Written with the offsets, dropped with them."""
        return f"{self.prefix}seen:{group}:{topic}"

    def seq(self, cid: str) -> str:
        """Hash: the newest frame bucket topic, producer run and next `mw-seq` counted for a camera (gaps = lost)."""
        return f"{self.prefix}seq:{cid}"

    def live_topics(self) -> str:
        """Hash: frame bucket topic -> ms the janitor created it; the topics every worker follows (until retired)."""
        return f"{self.prefix}topics:live"

    def retired_topics(self) -> str:
        """Hash: frame bucket topic -> ms when the janitor retired it (consumed; workers drop it, then it is deleted)."""
        return f"{self.prefix}topics:retired"

    def updates(self) -> str:
        return f"{self.prefix}updates"

    def workers(self) -> str:
        return f"{self.prefix}workers"

    def worker(self, wid: str) -> str:
        return f"{self.prefix}worker:{wid}"

    def producer(self, pid: str) -> str:
        return f"{self.prefix}producer:{pid}"

    def producers(self) -> str:
        return f"{self.prefix}producers"

    def producers_reload(self) -> str:
        """String counter: bumped to ask every producer to re-read its site file (`maskwatch cameras reload`)."""
        return f"{self.prefix}producers:reload"

    def dashboard_leader(self) -> str:
        """String: id of the dashboard replica that emits live events (SET NX PX, renewed)."""
        return f"{self.prefix}dashboard:leader"

    def socketio_channel(self) -> str:
        """Pub/sub channel of Socket.IO's message queue shared by dashboard replicas."""
        return f"{self.prefix}socketio"

    def alerts(self) -> str:
        """Stream (capped): every alert start and end, each entry one JSON `event` field."""
        return f"{self.prefix}alerts"

    def alerts_active(self) -> str:
        """Hash: subject (`camera:{id}` or `site`) -> JSON of the start event of its alert in progress."""
        return f"{self.prefix}alerts:active"

    def alerts_leader(self) -> str:
        """String: id of the dashboard replica that evaluates alert rules (SET NX PX, renewed)."""
        return f"{self.prefix}alerts:leader"

    def session(self, sid: str) -> str:
        """String (TTL): JSON of one dashboard login session; the cookie holds only the random `sid`."""
        return f"{self.prefix}session:{sid}"

    def auth_failures(self, client: str) -> str:
        """Counter (TTL = the rate-limit window): failed logins and wrong tokens from one client address."""
        return f"{self.prefix}authfail:{client}"


def epoch_minute(ts_ms: int) -> int:
    return ts_ms // 60_000


def epoch_hour(ts_ms: int) -> int:
    return ts_ms // 3_600_000


def epoch_day(ts_ms: int) -> int:
    return ts_ms // 86_400_000


# The bucket levels a window is read from, largest first: (level, minutes per bucket).
WINDOW_LEVELS = (("day", 1440), ("hour", 60), ("minute", 1))

Bucket = tuple[str, int, int]  # (level, bucket index at that level, +1 or -1)


def window_buckets(minutes: int, now_minute: int) -> list[Bucket]:
    """The fewest day, hour and minute buckets whose signed sum is the window of the last `minutes` minutes, the
    current one included: whole days and hours, and at each edge either the minutes inside or a bucket less the
    minutes outside. No bucket holds anything after now, so a bucket may reach past it (today's day bucket holds
    today so far). A 24 h window is at most 2 days, 12 hours and 30 minutes, ~23 reads on average (not 1440).
    """
    if minutes < 1:
        raise ValueError(f"window of {minutes} minutes")
    return _cover(now_minute - minutes + 1, now_minute + 1, True, 0)


def _cover(a: int, b: int, open_end: bool, level: int) -> list[Bucket]:
    """The fewest signed buckets of WINDOW_LEVELS[level:] summing to the minutes [a, b); with `open_end` nothing
    is stored from b on, so buckets may reach past it."""
    if a >= b:
        return []
    kind, size = WINDOW_LEVELS[level]
    if size == 1:
        return [(kind, m, 1) for m in range(a, b)]
    best = _cover(a, b, open_end, level + 1)
    ceil_b = -(-b // size) * size
    for start in (a // size * size, -(-a // size) * size):
        for end in (ceil_b,) if open_end else (b // size * size, ceil_b):
            if end < start or (open_end and start > b):
                continue
            # [start, end) in whole buckets, then the edges: plus what lies inside, minus what lies outside
            candidate = [(kind, i, 1) for i in range(start // size, end // size)] + _edge(a, start, level + 1)
            if not open_end:
                candidate += _edge(end, b, level + 1)
            if len(candidate) < len(best):
                best = candidate
    return best


def _edge(x: int, y: int, level: int) -> list[Bucket]:
    """The minutes between a window's edge x and a bucket's edge y: +[x, y) when x < y, -[y, x) when y < x."""
    if x <= y:
        return _cover(x, y, False, level)
    return [(kind, i, -sign) for kind, i, sign in _cover(y, x, False, level)]


# Sums a camera's window buckets in Redis: KEYS the buckets, ARGV[1] their signs as one "+"/"-" character each.
# Answers the sums of COUNT_FIELDS, in that order: one row of counters per camera instead of ~23 hashes.
SUM_BUCKETS_LUA = (
    "local fields = {" + ", ".join(f"'{name}'" for name in COUNT_FIELDS) + "}\n"
    + """
local total = {}
for f = 1, #fields do total[f] = 0 end
for i, key in ipairs(KEYS) do
  local sign = string.sub(ARGV[1], i, i) == '-' and -1 or 1
  local row = redis.call('HMGET', key, unpack(fields))
  for f = 1, #fields do
    local v = tonumber(row[f])
    if v then total[f] = total[f] + sign * v end
  end
end
return total
"""
)


EPISODE_OPEN = "open"
EPISODE_CLOSED = "closed"


@dataclass(frozen=True)
class Episode:
    """One person's violation: a tracked face judged unmasked (or wrongly masked) by a vote over its frames.

    It opens once the vote covers enough frames, stays open while the person is seen and closes after they
    have been gone for `grace_ms`. `snapshot` carries the best face crop when it changed in this batch
    (the largest, sharpest face of the episode); `snapshot_ms` says when that face was seen.
    """

    camera_id: str
    id: str
    label: str
    votes: tuple[tuple[str, int], ...]
    first_ms: int
    last_ms: int
    box: tuple[float, float, float, float]
    score: float
    state: str
    grace_ms: int
    snapshot_ms: int | None = None
    snapshot: bytes | None = None
    # how good the kept snapshot is (worker/episodes.py face_quality), so a worker taking over keeps the best
    quality: float = 0.0

    def __post_init__(self) -> None:
        if self.state not in (EPISODE_OPEN, EPISODE_CLOSED):
            raise ValueError(f"bad episode state {self.state!r}")
        if self.last_ms < self.first_ms:
            raise ValueError("episode ends before it starts")

    @property
    def frames(self) -> int:
        return sum(n for _, n in self.votes)

    def to_fields(self) -> dict[str, str | int | float]:
        """The episode's hash in Redis (the snapshot bytes live under their own key)."""
        return {
            "id": self.id,
            "camera": self.camera_id,
            "class": self.label,
            "votes": json.dumps(dict(self.votes), separators=(",", ":")),
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "box": json.dumps([round(x, 4) for x in self.box]),
            "score": round(self.score, 4),
            "state": self.state,
            "grace_ms": self.grace_ms,
            "snapshot_ms": self.snapshot_ms if self.snapshot_ms is not None else "",
            "quality": round(self.quality, 1),
        }

    @classmethod
    def from_fields(cls, f: Mapping[str, str]) -> Episode:
        """An episode hash read back (without its snapshot bytes)."""
        snap = f.get("snapshot_ms", "")
        return cls(
            camera_id=f["camera"],
            id=f["id"],
            label=f["class"],
            votes=tuple(sorted((str(k), int(v)) for k, v in json.loads(f.get("votes", "{}") or "{}").items())),
            first_ms=int(f["first_ms"]),
            last_ms=int(f["last_ms"]),
            box=tuple(float(x) for x in json.loads(f["box"])),  # type: ignore[arg-type]
            score=float(f.get("score", 0) or 0),
            state=f.get("state", EPISODE_CLOSED),
            grace_ms=int(f.get("grace_ms", 0) or 0),
            snapshot_ms=int(snap) if snap else None,
            quality=float(f.get("quality", 0) or 0),
        )


def episode_row(fields: Mapping[str, str], snapshot_key: str, now_ms: int) -> dict[str, Any]:
    """An episode hash as the API, CLI, reports and live events show it.

    `state` is `closed` also for an episode stored open whose worker went away (its last sighting is long
    past its grace), so nothing stays open for ever.
    """
    first, last = int(fields.get("first_ms", 0)), int(fields.get("last_ms", 0))
    grace = int(fields.get("grace_ms", 0) or 0)
    state = fields.get("state", EPISODE_CLOSED)
    if state == EPISODE_OPEN and now_ms - last > grace + EPISODE_ORPHAN_SLACK_MS:
        state = EPISODE_CLOSED
    snap_ms = fields.get("snapshot_ms", "")
    return {
        "id": fields.get("id", ""),
        "camera": fields.get("camera", ""),
        "class": fields.get("class", ""),
        "state": state,
        "ts_ms": first,
        "first_ms": first,
        "last_ms": last,
        "duration_s": round((last - first) / 1000, 1),
        "votes": json.loads(fields.get("votes", "{}") or "{}"),
        "score": float(fields.get("score", 0.0) or 0.0),
        "box": json.loads(fields.get("box", "[]") or "[]"),
        "snapshot": snapshot_key if snap_ms else "",
        "snapshot_ms": int(snap_ms) if snap_ms else None,
    }


def episode_notice(ep: Episode) -> dict[str, Any]:
    """An episode as the worker announces it on `mw:updates` (the dashboard's `violation` event adds the URL)."""
    fields = {k: str(v) for k, v in ep.to_fields().items()}
    return {k: v for k, v in episode_row(fields, "", ep.last_ms).items() if k != "snapshot"}


@dataclass
class SeqSpan:
    """One camera's frames in one topic partition of a batch: the producer run, the first and last `mw-seq` seen,
    the gaps between them, and the capture time of the first frame (where a gap before it is counted)."""

    run: str
    first: int
    last: int
    ts_ms: int
    gaps: int = 0

    def see(self, run: str, seq: int) -> None:
        if run != self.run:  # the producer restarted: its new run starts its own span
            self.run, self.first, self.last = run, seq, seq
        elif seq > self.last:
            self.gaps += seq - self.last - 1
            self.last = seq


@dataclass
class Seen:
    """The next `mw-seq` per camera in one topic partition, with its producer run. A frame below it was read
    already: a producer retry after an unanswered request wrote it twice. The copy is skipped and counted nowhere."""

    by_camera: dict[str, tuple[str, int]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)

    def first_time(self, cid: str, run: str, seq: int) -> bool:
        """True for a frame not read before (and remember it); False for a copy."""
        have = self.by_camera.get(cid)
        if have is not None and have[0] == run and seq < have[1]:
            return False
        self.by_camera[cid] = (run, seq + 1)
        self.changed.add(cid)
        return True

    def take_changes(self) -> dict[str, tuple[str, int]]:
        """What changed since the last call: the part a batch writes with its offsets."""
        out = {cid: self.by_camera[cid] for cid in self.changed}
        self.changed.clear()
        return out


def _bucket_order(topic: str) -> int:
    """Time-bucketed topics sort by their bucket; any other topic is its own only bucket."""
    tail = topic.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def seq_losses(
    spans: Mapping[tuple[TP, str], SeqSpan], states: Mapping[str, dict[str, str]]
) -> tuple[dict[tuple[TP, str], int], dict[str, dict[str, str]]]:
    """Frames lost before or inside each span (gaps in a camera's `mw-seq` within one topic and producer run), and
    each camera's new state (newest topic, run, next seq). A span of an older topic than the state's (rotating
    topics are consumed side by side) neither counts a gap before it nor moves the state."""
    lost: dict[tuple[TP, str], int] = {}
    new: dict[str, dict[str, str]] = {}
    for (tp, cid), span in sorted(spans.items(), key=lambda kv: (_bucket_order(kv[0][0][0]), kv[1].first)):
        st = new.get(cid) or dict(states.get(cid) or {})
        topic = tp[0]
        n = span.gaps
        same = st.get("topic") == topic and st.get("run") == span.run
        if same:
            n += max(0, span.first - int(st.get("next", span.first)))
        newer = not st or _bucket_order(topic) > _bucket_order(st.get("topic", ""))
        if newer or (_bucket_order(topic) == _bucket_order(st.get("topic", "")) and (same or st.get("run") != span.run)):
            nxt = max(span.last + 1, int(st.get("next", 0))) if same else span.last + 1
            new[cid] = {"topic": topic, "run": span.run, "next": str(nxt)}
        if n:
            lost[(tp, cid)] = n
    return lost, new


# A partition of a topic: (topic, partition), as kafka-python's TopicPartition (a named tuple) is.
TP = tuple[str, int]


@dataclass
class BatchWrite:
    """Everything one processed batch writes, applied in one MULTI/EXEC.

    `counts` is keyed by (topic partition, camera, epoch_minute); `next_offsets` by topic partition. A batch may
    span several topics (time-bucketed topics rotate under a running worker).
    """

    next_offsets: dict[TP, int] = field(default_factory=dict)
    start_offsets: dict[TP, int] = field(default_factory=dict)
    counts: dict[tuple[TP, str, int], Counts] = field(default_factory=dict)
    last_frame_ms: dict[str, int] = field(default_factory=dict)
    latest_jpeg: dict[str, bytes] = field(default_factory=dict)
    seqs: dict[tuple[TP, str], SeqSpan] = field(default_factory=dict)
    # topic partition -> camera -> (producer run, next mw-seq): what `Seen` learnt from this batch
    seen: dict[TP, dict[str, tuple[str, int]]] = field(default_factory=dict)
    # (topic partition, episode): the latest state of each episode this batch changed
    episodes: list[tuple[TP, Episode]] = field(default_factory=list)
    # camera -> its zone in the site file (empty: none); zone buckets are written for cameras listed here
    zones: dict[str, str] = field(default_factory=dict)

    def see(self, tp: TP, cid: str, run: str, seq: int, ts_ms: int) -> None:
        """A frame of `cid` (counted, stale or invalid) with its producer run and `mw-seq`: gaps are counted lost."""
        span = self.seqs.get((tp, cid))
        if span is None:
            self.seqs[(tp, cid)] = SeqSpan(run, seq, seq, ts_ms)
        else:
            span.see(run, seq)

    def add(self, tp: TP, cid: str, ts_ms: int, counts: Counts) -> None:
        key = (tp, cid, epoch_minute(ts_ms))
        prev = self.counts.get(key)
        self.counts[key] = counts if prev is None else prev + counts
        if counts.frames:
            self.last_frame_ms[cid] = max(self.last_frame_ms.get(cid, 0), ts_ms)

    def cameras(self) -> set[str]:
        return {cid for (_, cid, _) in self.counts}

    def topics(self) -> set[str]:
        return {topic for topic, _ in self.next_offsets}

    def totals_by_camera(self) -> dict[str, Counts]:
        out: dict[str, Counts] = {}
        for (_, cid, _), c in self.counts.items():
            out[cid] = out[cid] + c if cid in out else c
        return out


@dataclass
class CommitResult:
    """Which topic partitions of a batch were applied, were already applied, or belong to someone else now."""

    applied: set[TP] = field(default_factory=set)
    duplicate: set[TP] = field(default_factory=set)
    conflicts: dict[TP, int] = field(default_factory=dict)


def _with_lost(batch: BatchWrite, lost: Mapping[tuple[TP, str], int]) -> BatchWrite:
    """The batch with its `lost` frames counted at the capture minute of the frame after each gap."""
    if not lost:
        return batch
    counts = dict(batch.counts)
    for (tp, cid), n in lost.items():
        key = (tp, cid, epoch_minute(batch.seqs[(tp, cid)].ts_ms))
        counts[key] = counts[key] + Counts(lost=n) if key in counts else Counts(lost=n)
    return replace(batch, counts=counts)


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class Store:
    """MaskWatch's view of Redis."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = DEFAULT_PREFIX,
        minute_ttl_s: int = MINUTE_TTL_S,
        history_ttl_s: int = HISTORY_TTL_S,
    ) -> None:
        # typed loosely: redis-py's response unions (bytes | str | None per call) say nothing useful here
        self.r: Any = client
        self.keys = Keys(prefix)
        self.minute_ttl_s = minute_ttl_s
        self.history_ttl_s = history_ttl_s
        self._sum_buckets = self.r.register_script(SUM_BUCKETS_LUA)

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, **kw: Any) -> Store:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=10)
        return cls(client, prefix, **kw)

    def close(self) -> None:
        self.r.close()

    # ---- writes -------------------------------------------------------------------------

    def register_camera(self, cid: str, **meta: str | int | float) -> None:
        with self.r.pipeline(transaction=True) as p:
            p.sadd(self.keys.cameras(), cid)
            if meta:
                p.hset(self.keys.camera(cid), mapping={k: str(v) for k, v in meta.items()})
            p.execute()

    def register_cameras(self, cids: Iterable[str]) -> None:
        """Add the site's cameras to the known set (the producer does, before their first frame); a camera the site
        names again after it was retired is part of the site again (its frames count, not dead-lettered)."""
        ids = list(cids)
        if ids:
            with self.r.pipeline(transaction=True) as p:
                p.sadd(self.keys.cameras(), *ids)
                p.srem(self.keys.retired(), *ids)
                p.execute()

    def set_camera_fields(self, cid: str, **fields: str | int | float) -> None:
        self.register_camera(cid, **fields)

    def commit_batch(self, batch: BatchWrite, group: str) -> CommitResult:
        """Apply a batch exactly once: counts, events and next offsets in one transaction.

        A topic partition's part is applied only when the stored offset equals the batch's start
        offset for it (or none is stored yet). When the stored offset is at or past the
        batch's next offset, that part was applied before (a retry after an ambiguous
        failure): it is skipped. Any other stored offset means another consumer moved the
        partition on (a rebalance): the part is skipped and reported as a conflict, so the
        caller re-reads from the stored offset.
        """
        okeys = {topic: self.keys.offsets(group, topic) for topic in sorted(batch.topics())}
        seq_cams = sorted({cid for _, cid in batch.seqs})
        with self.r.pipeline(transaction=True) as p:
            while True:
                try:
                    if okeys or seq_cams:
                        p.watch(*okeys.values(), *(self.keys.seq(c) for c in seq_cams))
                    stored = {
                        (topic, int(k)): int(v) for topic, okey in okeys.items() for k, v in p.hgetall(okey).items()
                    }
                    states = {c: {_s(k): _s(v) for k, v in p.hgetall(self.keys.seq(c)).items()} for c in seq_cams}
                    result = CommitResult()
                    for tp, nxt in batch.next_offsets.items():
                        have = stored.get(tp)
                        start = batch.start_offsets.get(tp, have)
                        if have is None or have == start:
                            result.applied.add(tp)
                        elif have >= nxt:
                            result.duplicate.add(tp)
                        else:
                            result.conflicts[tp] = have
                    if not result.applied:
                        p.unwatch()
                        return result
                    spans = {key: span for key, span in batch.seqs.items() if key[0] in result.applied}
                    lost, seq_states = seq_losses(spans, states)
                    p.multi()
                    self._queue_batch(p, _with_lost(batch, lost), result.applied)
                    for cid, st in seq_states.items():
                        p.hset(self.keys.seq(cid), mapping=st)
                    for topic, okey in okeys.items():
                        moved = {str(part): batch.next_offsets[(t, part)] for t, part in result.applied if t == topic}
                        if moved:
                            p.hset(okey, mapping=moved)
                        seen = {
                            f"{part}:{cid}": f"{nxt}:{run}"
                            for (t, part), cams in batch.seen.items()
                            if t == topic and (t, part) in result.applied
                            for cid, (run, nxt) in cams.items()
                        }
                        if seen:
                            p.hset(self.keys.seen(group, topic), mapping=seen)
                    p.execute()
                    return result
                except redis.WatchError:
                    continue

    def _queue_batch(self, p: Any, batch: BatchWrite, partitions: set[TP]) -> None:
        k = self.keys
        touched: set[str] = set()
        for (part, cid, minute), c in batch.counts.items():
            if part not in partitions:
                continue
            touched.add(cid)
            # every field, zeros included: a reader of Redis finds each counter present (Contract 3)
            fields = c.as_dict()
            ts_ms = minute * 60_000
            buckets = [(k.minute(cid, minute), self.minute_ttl_s)]
            buckets += [(k.hour(cid, epoch_hour(ts_ms)), self.history_ttl_s), (k.day(cid, epoch_day(ts_ms)), self.history_ttl_s)]
            zone = batch.zones.get(cid, "")
            if zone:
                buckets += [
                    (k.zone_hour(zone, epoch_hour(ts_ms)), self.history_ttl_s),
                    (k.zone_day(zone, epoch_day(ts_ms)), self.history_ttl_s),
                ]
            for name, v in fields.items():
                p.hincrby(k.totals(cid), name, v)
                for key, _ in buckets:
                    p.hincrby(key, name, v)
            for key, ttl in buckets:
                p.expire(key, ttl)
        for cid in touched:
            if cid in batch.last_frame_ms:  # counted frames (re)register a camera; rejected ones never create one
                p.sadd(k.cameras(), cid)
                p.hset(k.camera(cid), "last_frame_ms", batch.last_frame_ms[cid])
            if cid in batch.latest_jpeg:
                p.set(k.latest(cid), batch.latest_jpeg[cid], ex=LATEST_TTL_S)
        for part, ep in batch.episodes:
            if part in partitions:
                self._queue_episode(p, ep)

    def _queue_episode(self, p: Any, ep: Episode) -> None:
        """Upsert one episode (idempotent: a retried batch writes the same state again)."""
        k = self.keys
        ekey = k.episode(ep.camera_id, ep.id)
        p.hset(ekey, mapping=ep.to_fields())
        p.expire(ekey, EPISODE_TTL_S)
        p.zadd(k.episodes(ep.camera_id), {ep.id: ep.first_ms})
        p.zremrangebyscore(k.episodes(ep.camera_id), "-inf", f"({ep.first_ms - EPISODE_TTL_S * 1000}")
        if ep.snapshot is not None:
            p.set(k.snapshot(ep.camera_id, ep.id), ep.snapshot, ex=EPISODE_TTL_S)

    def close_episodes(self, episodes: Iterable[Episode]) -> None:
        """Write episodes closed outside a batch (their camera went quiet): an idempotent upsert, no offsets."""
        with self.r.pipeline(transaction=True) as p:
            for ep in episodes:
                self._queue_episode(p, ep)
            p.execute()

    def forget_offsets(self, group: str, topic: str) -> None:
        """Drop stored offsets (and the frames seen): only when the topic was (re)created, e.g. by a fresh embedded
        broker, or deleted."""
        self.r.delete(self.keys.offsets(group, topic), self.keys.seen(group, topic))

    def init_offsets(self, group: str, topic: str, partitions: int) -> None:
        """Store offset 0 for each partition of a topic about to be created (kept where one is stored already)."""
        key = self.keys.offsets(group, topic)
        with self.r.pipeline(transaction=True) as p:
            for part in range(partitions):
                p.hsetnx(key, str(part), 0)
            p.execute()

    def add_live_topics(self, topics: Iterable[str], now_ms: int) -> None:
        topics = list(topics)
        if topics:
            self.r.hset(self.keys.live_topics(), mapping=dict.fromkeys(topics, now_ms))

    def live_topics(self) -> list[str]:
        """The bucket topics workers follow: one list for every worker, so they agree and the group settles."""
        return sorted(_s(k) for k in self.r.hkeys(self.keys.live_topics()))

    def retire_topics(self, topics: Iterable[str], now_ms: int) -> None:
        """Move topics from the followed list to the retired one, in one transaction."""
        topics = list(topics)
        if topics:
            with self.r.pipeline(transaction=True) as p:
                p.hdel(self.keys.live_topics(), *topics)
                p.hset(self.keys.retired_topics(), mapping=dict.fromkeys(topics, now_ms))
                p.execute()

    def retired_topics(self) -> dict[str, int]:
        return {_s(k): int(v) for k, v in self.r.hgetall(self.keys.retired_topics()).items()}

    def forget_retired(self, topics: Iterable[str]) -> None:
        topics = list(topics)
        if topics:
            self.r.hdel(self.keys.retired_topics(), *topics)

    def forget_topics(self) -> None:
        """Both lists: after a broker restart none of those topics exists any more."""
        self.r.delete(self.keys.live_topics(), self.keys.retired_topics())

    def offset_topics(self, group: str) -> list[str]:
        """The topics that have offsets stored for `group`."""
        head = self.keys.offsets(group, "")
        return sorted(_s(k)[len(head) :] for k in self.r.scan_iter(match=head.replace("*", r"\*") + "*", count=500))

    def publish_update(self, notice: LiveNotice) -> None:
        self.r.publish(self.keys.updates(), json.dumps(notice.to_json(), separators=(",", ":")))

    def heartbeat(self, kind: str, ident: str, fields: Mapping[str, Any], ttl_s: int = HEARTBEAT_TTL_S) -> None:
        key = self.keys.worker(ident) if kind == "worker" else self.keys.producer(ident)
        index = self.keys.workers() if kind == "worker" else self.keys.producers()
        data = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in fields.items()}
        data["ts_ms"] = str(int(time.time() * 1000))
        with self.r.pipeline(transaction=True) as p:
            p.delete(key)
            p.hset(key, mapping=data)
            p.expire(key, ttl_s)
            p.sadd(index, ident)
            p.execute()

    def drop_heartbeat(self, kind: str, ident: str) -> None:
        key = self.keys.worker(ident) if kind == "worker" else self.keys.producer(ident)
        index = self.keys.workers() if kind == "worker" else self.keys.producers()
        with self.r.pipeline(transaction=True) as p:
            p.delete(key)
            p.srem(index, ident)
            p.execute()

    # ---- reads --------------------------------------------------------------------------

    def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.r.hgetall(self.keys.offsets(group, topic)).items()}

    def seen_in(self, group: str, topic: str, partition: int) -> Seen:
        """What was read of one topic partition, as its last applied batch left it."""
        head = f"{partition}:"
        out: dict[str, tuple[str, int]] = {}
        for k, v in self.r.hgetall(self.keys.seen(group, topic)).items():
            field_, value = _s(k), _s(v)
            if field_.startswith(head):
                nxt, _, run = value.partition(":")
                out[field_[len(head) :]] = (run, int(nxt))
        return Seen(out)

    def camera_ids(self) -> list[str]:
        """The site's cameras: every known camera but the retired ones."""
        return sorted(_s(c) for c in self.r.sdiff(self.keys.cameras(), self.keys.retired()))

    def retired_camera_ids(self) -> list[str]:
        return sorted(_s(c) for c in self.r.smembers(self.keys.retired()))

    def camera_info(self, cid: str) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in self.r.hgetall(self.keys.camera(cid)).items()}

    def totals(self, cid: str) -> Counts:
        return Counts.from_mapping({_s(k): v for k, v in self.r.hgetall(self.keys.totals(cid)).items()})

    def series(self, cid: str, start_minute: int, end_minute: int) -> list[tuple[int, Counts]]:
        """Per-minute counts for minutes in [start_minute, end_minute], oldest first (missing minutes are zero)."""
        if end_minute < start_minute:
            raise ValueError("end before start")
        minutes = list(range(start_minute, end_minute + 1))
        with self.r.pipeline(transaction=False) as p:
            for m in minutes:
                p.hgetall(self.keys.minute(cid, m))
            rows = p.execute()
        return [
            (m, Counts.from_mapping({_s(k): v for k, v in row.items()})) for m, row in zip(minutes, rows, strict=True)
        ]

    def window_keys(self, cid: str, minutes: int, now_minute: int) -> list[tuple[str, int]]:
        """(bucket, +1 or -1): one camera's buckets whose signed sum is the window of the last `minutes` minutes,
        the current one included (`window_buckets`)."""
        return [(self.keys.bucket(level, cid, i), sign) for level, i, sign in window_buckets(minutes, now_minute)]

    def buckets(self, kind: str, subject: str, indexes: Iterable[int]) -> list[Counts]:
        """Counts of one camera's (kind minute/hour/day) or zone's (zone_hour/zone_day) buckets; missing = zero."""
        name = {
            "minute": self.keys.minute,
            "hour": self.keys.hour,
            "day": self.keys.day,
            "zone_hour": self.keys.zone_hour,
            "zone_day": self.keys.zone_day,
        }[kind]
        with self.r.pipeline(transaction=False) as p:
            for i in indexes:
                p.hgetall(name(subject, i))
            rows = p.execute()
        empty = Counts()  # most buckets of a long range are empty: one shared value
        return [Counts.from_mapping({_s(k): v for k, v in row.items()}) if row else empty for row in rows]

    def zones(self) -> dict[str, list[str]]:
        """Zone -> its cameras, as the producers registered them from the site file (cameras with no zone left out)."""
        ids = self.camera_ids()
        out: dict[str, list[str]] = {}
        for cid, zone in self.camera_zones(ids).items():
            if zone:
                out.setdefault(zone, []).append(cid)
        return dict(sorted(out.items()))

    def window(self, cid: str, minutes: int, now_ms: int | None = None) -> Counts:
        """Counts over the last `minutes` minutes, the current one included."""
        ((_, win, _),) = self.summaries_data([cid], minutes, now_ms if now_ms is not None else int(time.time() * 1000))
        return win

    def summaries_data(
        self, cids: list[str], minutes: int, now_ms: int
    ) -> list[tuple[dict[str, str], Counts, Counts]]:
        """(camera info, window counts, totals) of each camera, read in one pipelined round trip; Redis sums each
        camera's window buckets (`SUM_BUCKETS_LUA`), so a reply carries one row of counters per camera."""
        buckets = window_buckets(minutes, epoch_minute(now_ms))
        signs = ["".join("+" if sign > 0 else "-" for _, _, sign in buckets)]
        with self.r.pipeline(transaction=False) as p:
            for cid in cids:
                p.hgetall(self.keys.camera(cid))
                p.hgetall(self.keys.totals(cid))
                self._sum_buckets(keys=[self.keys.bucket(level, cid, i) for level, i, _ in buckets], args=signs, client=p)
            rows = p.execute()
        out = []
        for i in range(0, len(rows), 3):
            info = {_s(k): _s(v) for k, v in rows[i].items()}
            totals = Counts.from_mapping({_s(k): v for k, v in rows[i + 1].items()})
            # never below zero (a bucket less minutes that hold a counter the bucket lacks)
            window = Counts(**{f: max(0, v) for f, v in zip(COUNT_FIELDS, rows[i + 2], strict=True)})
            out.append((info, window, totals))
        return out

    def latest_jpeg(self, cid: str) -> bytes | None:
        v = self.r.get(self.keys.latest(cid))
        return bytes(v) if v is not None else None

    def episodes(
        self, cid: str, count: int = 50, since_ms: int | None = None, until_ms: int | None = None, now_ms: int | None = None
    ) -> list[dict[str, Any]]:
        """A camera's violation episodes that started in [since_ms, until_ms], newest first (`episode_row`)."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        lo = "-inf" if since_ms is None else since_ms
        hi = "+inf" if until_ms is None else until_ms
        ids = [_s(i) for i in self.r.zrevrangebyscore(self.keys.episodes(cid), hi, lo, start=0, num=count)]
        with self.r.pipeline(transaction=False) as p:
            for eid in ids:
                p.hgetall(self.keys.episode(cid, eid))
            rows = p.execute()
        out = []
        for eid, row in zip(ids, rows, strict=True):
            if row:
                fields = {_s(a): _s(b) for a, b in row.items()}
                out.append(episode_row(fields, self.keys.snapshot(cid, eid), now))
        return out

    def open_episodes(self, cid: str, since_ms: int, newest: int = 50) -> list[Episode]:
        """A camera's episodes stored open whose person was last seen at or after `since_ms` (of its newest)."""
        ids = [_s(i) for i in self.r.zrevrange(self.keys.episodes(cid), 0, newest - 1)]
        with self.r.pipeline(transaction=False) as p:
            for eid in ids:
                p.hgetall(self.keys.episode(cid, eid))
            rows = p.execute()
        out = []
        for row in rows:
            f = {_s(a): _s(b) for a, b in row.items()}
            if f.get("state") == EPISODE_OPEN and int(f.get("last_ms", 0) or 0) >= since_ms:
                try:
                    out.append(Episode.from_fields(f))
                except (KeyError, ValueError):
                    continue
        return out

    def episode_counts(self, cid: str, since_ms: int, until_ms: int) -> int:
        """How many of a camera's episodes started in [since_ms, until_ms]."""
        return int(self.r.zcount(self.keys.episodes(cid), since_ms, until_ms))

    def snapshot(self, key: str) -> bytes | None:
        if not key.startswith(self.keys.prefix + "snap:"):
            return None
        v = self.r.get(key)
        return bytes(v) if v is not None else None

    def heartbeats(self, kind: str) -> dict[str, dict[str, str]]:
        index = self.keys.workers() if kind == "worker" else self.keys.producers()
        out: dict[str, dict[str, str]] = {}
        for ident in sorted(_s(i) for i in self.r.smembers(index)):
            key = self.keys.worker(ident) if kind == "worker" else self.keys.producer(ident)
            data = {_s(k): _s(v) for k, v in self.r.hgetall(key).items()}
            if data:
                out[ident] = data
            else:
                self.r.srem(index, ident)
        return out

    def camera_zones(self, cids: Iterable[str]) -> dict[str, str]:
        """Each camera's zone as its producer registered it from the site file ('' when none)."""
        ids = list(cids)
        with self.r.pipeline(transaction=False) as p:
            for cid in ids:
                p.hget(self.keys.camera(cid), "zone")
            zones = p.execute()
        return {cid: _s(z) if z is not None else "" for cid, z in zip(ids, zones, strict=True)}

    def has_camera(self, cid: str) -> bool:
        return bool(self.r.sismember(self.keys.cameras(), cid))

    # ---- producer: camera status rows and reload requests --------------------------------------

    def set_cameras_fields(
        self, rows: Mapping[str, Mapping[str, str | int | float]], retired: Iterable[str] = ()
    ) -> None:
        """Several cameras' status fields in one round trip (a producer refreshes all its cameras at once).

        Cameras in `retired` (removed from the site file) get their last row and are retired; every other
        camera of `rows` is part of the site again, if it was retired before."""
        if not rows:
            return
        gone = set(retired)
        with self.r.pipeline(transaction=True) as p:
            p.sadd(self.keys.cameras(), *rows)
            for cid, fields in rows.items():
                if fields:
                    p.hset(self.keys.camera(cid), mapping={k: str(v) for k, v in fields.items()})
            if rows.keys() - gone:
                p.srem(self.keys.retired(), *(rows.keys() - gone))
            if gone:
                self._queue_retire(p, gone)
            p.execute()

    def _queue_retire(self, p: Any, cids: Iterable[str]) -> None:
        now = int(time.time() * 1000)
        for cid in cids:
            p.sadd(self.keys.retired(), cid)
            p.hset(self.keys.camera(cid), mapping={"status": STATUS_RETIRED, "retired_ms": now})

    def retire_cameras(self, cids: Iterable[str]) -> None:
        """Retire cameras: they leave the overview, /api/cameras and the site's figures; their history stays."""
        cids = list(cids)
        if not cids:
            return
        with self.r.pipeline(transaction=True) as p:
            self._queue_retire(p, cids)
            p.execute()

    # ---- alerts (written only by the dashboard replica holding the alerts lock) ------------------

    def record_alert(self, subject: str, event: Mapping[str, Any]) -> str:
        """Append an alert start or end to the stream and update the active set, in one transaction.

        Returns the stream entry id.
        """
        data = json.dumps(event, separators=(",", ":"))
        with self.r.pipeline(transaction=True) as p:
            p.xadd(self.keys.alerts(), {"event": data}, maxlen=ALERTS_MAXLEN, approximate=True)
            if event.get("state") == "start":
                p.hset(self.keys.alerts_active(), subject, data)
            else:
                p.hdel(self.keys.alerts_active(), subject)
            entry_id = p.execute()[0]
        return _s(entry_id)

    def active_alerts(self) -> dict[str, dict[str, Any]]:
        """Alerts in progress by subject: the start event of each."""
        out: dict[str, dict[str, Any]] = {}
        for subject, raw in self.r.hgetall(self.keys.alerts_active()).items():
            try:
                out[_s(subject)] = json.loads(raw)
            except ValueError:
                continue
        return dict(sorted(out.items()))

    def alerts(self, count: int = 50, camera: str | None = None) -> list[dict[str, Any]]:
        """The newest alert starts and ends, newest first; only one camera's when `camera` is given."""
        out: list[dict[str, Any]] = []
        # a camera filter reads the whole (capped) stream in pages; without one, one page is the answer
        last = "+"
        while len(out) < count:
            page = self.r.xrevrange(self.keys.alerts(), max=last, count=max(count, 200) if camera else count)
            if not page:
                break
            for ident, fields in page:
                try:
                    event = json.loads(fields.get(b"event", fields.get("event", b"{}")))
                except ValueError:
                    continue
                if camera is None or event.get("camera") == camera:
                    out.append({"id": _s(ident), **event})
            if camera is None or len(page) < max(count, 200):
                break
            last = "(" + _s(page[-1][0])
        return out[:count]

    # ---- dashboard sessions and failed-login counters -----------------------------------------

    def create_session(self, data: Mapping[str, Any], ttl_s: int) -> str:
        """A new login session holding `data` (JSON), expiring after `ttl_s`; returns its random id."""
        sid = secrets.token_urlsafe(32)
        self.r.set(self.keys.session(sid), json.dumps(dict(data), separators=(",", ":")), ex=ttl_s)
        return sid

    def session(self, sid: str) -> dict[str, Any] | None:
        """The data of a live session, or None (unknown, expired, revoked, or not an id at all)."""
        if not SESSION_ID_RE.fullmatch(sid):
            return None
        raw = self.r.get(self.keys.session(sid))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def drop_session(self, sid: str) -> None:
        """Revoke a session (logout)."""
        if SESSION_ID_RE.fullmatch(sid):
            self.r.delete(self.keys.session(sid))

    def add_auth_failure(self, client: str, window_s: int) -> int:
        """Count one failed login or wrong token from `client`; returns the count in the current window."""
        key = self.keys.auth_failures(client)
        with self.r.pipeline(transaction=True) as p:
            p.set(key, 0, ex=window_s, nx=True)  # the window starts at the first failure; INCR keeps its TTL
            p.incr(key)
            count = p.execute()[1]
        return int(count)

    def auth_failures(self, client: str) -> tuple[int, int]:
        """(failures in the current window, seconds until it ends) for `client`."""
        key = self.keys.auth_failures(client)
        with self.r.pipeline(transaction=False) as p:
            p.get(key)
            p.ttl(key)
            raw, ttl = p.execute()
        return int(raw or 0), max(int(ttl), 0)

    def request_producer_reload(self) -> int:
        """Ask every producer to re-read its site file; returns the new request number."""
        return int(self.r.incr(self.keys.producers_reload()))

    def producer_reload_generation(self) -> int:
        """The latest reload request number (0 when none was ever made)."""
        return int(self.r.get(self.keys.producers_reload()) or 0)


class CameraStillSent(Exception):
    """A camera a running producer still sends: retired by hand it would come straight back."""


SENT_RECENTLY_S = 30.0  # a producer row this fresh, from a producer with a heartbeat, means it still runs the camera


def remove_camera(store: Store, cid: str, now_ms: int | None = None) -> bool:
    """Retire one camera by hand (`maskwatch cameras remove`, DELETE /api/cameras/{id}); False when it was
    already retired. Raises KeyError for an unknown camera, CameraStillSent when a live producer runs it."""
    if not store.has_camera(cid):
        raise KeyError(cid)
    if cid in store.retired_camera_ids():
        return False
    info = store.camera_info(cid)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    producer = info.get("producer", "")
    fresh = now - int(info.get("status_ms", "0") or 0) < SENT_RECENTLY_S * 1000
    if producer and fresh and info.get("status") != "ended" and producer in store.heartbeats("producer"):
        raise CameraStillSent(
            f"camera {cid} is run by producer {producer}: remove it from that producer's site file and run "
            "`maskwatch cameras reload` (a camera removed from the site file is retired by the reload)"
        )
    store.retire_cameras([cid])
    return True


def camera_summary(store: Store, cid: str, window_minutes: int, now_ms: int | None = None) -> CameraSummary:
    """What the dashboard, REST API and CLI show for one camera (Contract 4's `camera_update`)."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    ((info, win, totals),) = store.summaries_data([cid], window_minutes, now)
    return summarise(cid, info, win, totals, window_minutes, now)


def summarise(
    cid: str, info: Mapping[str, str], win: Counts, totals: Counts, window_minutes: int, now: int
) -> CameraSummary:
    """camera_summary from what Redis holds for the camera."""
    last = int(info.get("last_frame_ms", "0") or 0)
    captured = int(info.get("last_capture_ms", "0") or 0)
    small = win.small_face_share if win.faces else totals.small_face_share
    return CameraSummary(
        camera=cid,
        name=info.get("name", cid),
        site=info.get("site", ""),
        zone=info.get("zone", ""),
        status=info.get("status", "unknown"),
        last_error=info.get("last_error", ""),
        fps=float(info.get("fps", "0") or 0),
        last_frame_ms=last or None,
        data_age_s=round((now - last) / 1000, 1) if last else None,
        # seconds the newest counted frame trails the newest captured one (Contract 4's per-camera lag)
        lag=round(max(0, captured - last) / 1000, 1) if last and captured else None,
        window_minutes=window_minutes,
        window=win,
        compliance=None if win.compliance is None else round(win.compliance, 4),
        totals=totals,
        persons={k: getattr(win, k) for k in PERSON_FIELDS},
        warnings=("faces_too_small",) if small is not None and small > 0.5 else (),
    )


def camera_summaries(store: Store, window_minutes: int, now_ms: int | None = None) -> list[CameraSummary]:
    """camera_summary of every known camera, by id: what GET /api/cameras and `maskwatch stats --json` answer.

    One pipelined round trip for all cameras; windows of an hour or more read hourly buckets.
    """
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    cids = store.camera_ids()
    rows = store.summaries_data(cids, window_minutes, now)
    return [summarise(cid, info, win, totals, window_minutes, now) for cid, (info, win, totals) in zip(cids, rows, strict=True)]


def all_fields() -> Iterable[str]:
    return COUNT_FIELDS
