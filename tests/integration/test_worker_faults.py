"""Worker fault tolerance on real parts: totals stay exact through SIGKILLs, outages, rebalances and bad input."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from maskwatch import frames as F
from maskwatch.detections import Counts
from maskwatch.procs import Child, free_port, redis_answers, redis_command, wait_for
from maskwatch.store import Store
from maskwatch.topics import ensure_topics
from tests.integration.cheap_model import export_cheap_model
from tests.integration.worker_fixtures import (
    KILL_SESSION,
    Procs,
    accounted,
    env_for,
    expected,
    frame,
    produce,
    produce_in_background,
)

pytestmark = pytest.mark.slow  # minutes: started first (tests/conftest.py)

CAMS = ["cam-a", "cam-b", "cam-c", "cam-d", "cam-e"]


@pytest.fixture(scope="session")
def cheap_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_cheap_model(tmp_path_factory.mktemp("cheap"))


@pytest.fixture(scope="session")
def cheap_serving(cheap_model: Path, logs_dir: Path) -> Iterator[str]:
    with Procs(logs_dir) as procs:
        yield procs.serving("cheap-serving", free_port(), cheap_model)


EXACT = ("frames", "faces", "with_mask", "without_mask", "mask_worn_incorrectly", "invalid", "dropped_stale")


def _exact(c: Counts) -> dict[str, int]:
    """The per-frame fields, which must be exact; unique-person counts are estimates and restart with a worker."""
    d = c.as_dict()
    return {k: d[k] for k in EXACT}


def _totals(store: Store) -> dict[str, dict[str, int]]:
    return {c: _exact(store.totals(c)) for c in CAMS}


def _expected(n: int) -> dict[str, dict[str, int]]:
    return {c: _exact(v) for c, v in expected(CAMS, n).items()}


def _settled(store: Store, n: int) -> None:
    wait_for(lambda: accounted(store, CAMS) >= n, 240, f"{n} frames accounted", interval_s=0.25)


def _all_counted_exactly(feeder: threading.Thread, store: Store, n: int) -> None:
    feeder.join(timeout=60)
    _settled(store, n)
    assert _totals(store) == _expected(n)


def _workers_status(store: Store) -> dict[str, str]:
    return {w: hb.get("status", "") for w, hb in store.heartbeats("worker").items()}


@pytest.mark.timeout(420)
def test_sigkill_three_times_loses_and_doubles_nothing(
    kafka: str, redis_url: str, cheap_serving: str, names: dict[str, str], topic: str, logs_dir: Path
) -> None:
    n = 2000
    procs = Procs(logs_dir, env_for(kafka, redis_url, cheap_serving, names, MW_MAX_POLL_RECORDS="32", **KILL_SESSION))
    store = Store.from_url(redis_url, names["redis_prefix"])
    try:
        procs.worker("w1")
        procs.worker("w2")
        feeder = produce_in_background(kafka, topic, CAMS, n, per_s=120)
        rnd = random.Random(7)
        for kill in range(3):
            target = accounted(store, CAMS) + rnd.randint(150, 350)
            wait_for(lambda t=target: accounted(store, CAMS) >= t, 120, f"progress before kill {kill + 1}")
            victim = rnd.choice(["w1", "w2"])
            procs[victim].kill(signal.SIGKILL)
            procs.worker(victim)
        feeder.join(timeout=120)
        _settled(store, n)
        got = _totals(store)
        assert got == _expected(n), got
        assert accounted(store, CAMS) == n
        assert all(rc == 0 for rc in procs.stop_all().values())

        # a fresh consumer group over the same topic counts the same
        recount = {**names, "group": names["group"] + "-re", "redis_prefix": names["redis_prefix"] + "re:"}
        procs2 = Procs(logs_dir, env_for(kafka, redis_url, cheap_serving, recount))
        store2 = Store.from_url(redis_url, recount["redis_prefix"])
        procs2.worker("w-recount")
        _settled(store2, n)
        assert _totals(store2) == got
        assert procs2.stop_all() == {"w-recount": 0}
        store2.close()
    finally:
        procs.stop_all()
        store.close()


@pytest.mark.timeout(300)
def test_model_server_down_ten_seconds(
    kafka: str, redis_url: str, cheap_model: Path, names: dict[str, str], topic: str, logs_dir: Path
) -> None:
    n = 600
    port = free_port()
    procs = Procs(logs_dir, env_for(kafka, redis_url, f"127.0.0.1:{port}", names))
    store = Store.from_url(redis_url, names["redis_prefix"])
    try:
        procs.serving("serving-outage", port, cheap_model)
        procs.worker("w-outage")
        feeder = produce_in_background(kafka, topic, CAMS, n, per_s=40)
        wait_for(lambda: accounted(store, CAMS) >= 100, 60, "first frames")
        procs["serving-outage"].kill(signal.SIGKILL)
        wait_for(lambda: _workers_status(store).get("w-outage") == "degraded", 30, "worker reports degraded")
        reason = store.heartbeats("worker")["w-outage"]["reason"]
        assert reason.startswith("model"), reason
        held = accounted(store, CAMS)
        outage_end = time.monotonic() + 10
        wait_for(lambda: time.monotonic() >= outage_end, 15, "the 10 s outage")
        assert accounted(store, CAMS) == held  # nothing counted (nor dropped) while the model is away
        procs.serving("serving-outage", port, cheap_model)
        wait_for(lambda: _workers_status(store).get("w-outage") == "ok", 60, "worker recovers")
        _all_counted_exactly(feeder, store, n)
    finally:
        procs.stop_all()
        store.close()


@pytest.mark.timeout(300)
def test_redis_down_ten_seconds(
    kafka: str, cheap_serving: str, names: dict[str, str], topic: str, logs_dir: Path, tmp_path: Path
) -> None:
    n = 600
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    argv = redis_command(port, str(tmp_path)) + ["--appendonly", "yes", "--appendfsync", "always"]
    rproc = Child("redis-outage", argv)

    def start_redis() -> None:
        rproc.start(tmp_path).wait_ready(lambda: redis_answers(url), 20, "redis")

    start_redis()
    procs = Procs(logs_dir, env_for(kafka, url, cheap_serving, names))
    store = Store.from_url(url, names["redis_prefix"])
    try:
        procs.worker("w-redis")
        feeder = produce_in_background(kafka, topic, CAMS, n, per_s=40)
        wait_for(lambda: accounted(store, CAMS) >= 100, 60, "first frames")
        rproc.kill(signal.SIGTERM)  # redis persists (AOF) and exits
        outage_end = time.monotonic() + 10
        wait_for(lambda: time.monotonic() >= outage_end, 15, "the 10 s outage")
        start_redis()
        wait_for(lambda: _workers_status(store).get("w-redis") == "ok", 60, "worker heartbeat after redis returns")
        _all_counted_exactly(feeder, store, n)
    finally:
        procs.stop_all()
        store.close()
        rproc.stop(20)


@pytest.mark.timeout(300)
def test_scale_one_three_one(
    kafka: str, redis_url: str, cheap_serving: str, names: dict[str, str], topic: str, logs_dir: Path
) -> None:
    n = 1200
    procs = Procs(logs_dir, env_for(kafka, redis_url, cheap_serving, names))
    store = Store.from_url(redis_url, names["redis_prefix"])
    try:
        procs.worker("s1")
        feeder = produce_in_background(kafka, topic, CAMS, n, per_s=60)
        wait_for(lambda: accounted(store, CAMS) >= 200, 60, "progress with one worker")
        procs.worker("s2")
        procs.worker("s3")
        wait_for(lambda: len([w for w, hb in store.heartbeats("worker").items() if hb.get("partitions") not in ("[]", "")]) == 3, 90, "three workers own partitions")
        procs["s2"].kill(signal.SIGTERM)
        procs["s3"].kill(signal.SIGTERM)
        assert procs["s2"].returncode == 0 and procs["s3"].returncode == 0
        _all_counted_exactly(feeder, store, n)
    finally:
        procs.stop_all()
        store.close()


@pytest.mark.timeout(240)
def test_bad_messages_are_dead_lettered(
    kafka: str, redis_url: str, cheap_serving: str, names: dict[str, str], topic: str, logs_dir: Path
) -> None:
    procs = Procs(logs_dir, env_for(kafka, redis_url, cheap_serving, names))
    store = Store.from_url(redis_url, names["redis_prefix"])
    good = frame("cam-a", 0)
    corrupt = good.jpeg[:20] + b"\x00" * 200
    # a client that is not our producer: no `mw-producer` run, so its messages are nobody's copies or gaps
    hdr = {k: v for k, v in good.headers() if k != F.H_PRODUCER}
    bad: list[tuple[bytes, bytes, list[tuple[str, bytes]], str]] = [
        (b"cam-b", good.jpeg, [(k, v) for k, v in hdr.items() if k != F.H_VERSION], F.ERR_NO_VERSION),
        (b"cam-b", good.jpeg, [(k, b"9" if k == F.H_VERSION else v) for k, v in hdr.items()], F.ERR_BAD_VERSION),
        (b"bad camera!", good.jpeg, list(hdr.items()), F.ERR_BAD_CAMERA),
        (b"cam-c", b"GIF89a....", [(k, b"cam-c" if k == F.H_CAMERA else v) for k, v in hdr.items()], F.ERR_NOT_JPEG),
        (b"cam-c", corrupt, [(k, b"cam-c" if k == F.H_CAMERA else v) for k, v in hdr.items()], F.ERR_UNDECODABLE),
    ]
    try:
        procs.worker("w-bad")
        p = KafkaProducer(bootstrap_servers=[kafka])
        for key, value, headers, _ in bad:
            p.send(topic, key=key, value=value, headers=headers)
        for i in range(10):
            f = frame("cam-a", i)
            p.send(topic, key=f.key, value=f.jpeg, headers=f.headers())
        p.flush()
        p.close()
        wait_for(lambda: store.totals("cam-a").frames == 10 and store.totals("cam-c").invalid == 2, 120, "good frames counted, bad ones rejected")
        assert store.totals("cam-b").invalid == 2 and store.totals("cam-b").frames == 0
        assert procs["w-bad"].alive()

        dlq = KafkaConsumer(names["dlq_topic"], bootstrap_servers=[kafka], auto_offset_reset="earliest", consumer_timeout_ms=3000, group_id=None)
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while len(seen) < len(bad) and time.monotonic() < deadline:
            for rec in dlq:
                seen.append(dict(rec.headers)[F.H_ERROR].decode())
        dlq.close()
        assert sorted(seen) == sorted(reason for *_, reason in bad)
    finally:
        assert procs.stop_all() == {"w-bad": 0}
        store.close()


@pytest.mark.timeout(240)
def test_stale_backlog_dropped_fresh_counted(
    kafka: str, redis_url: str, cheap_serving: str, names: dict[str, str], topic: str, logs_dir: Path
) -> None:
    procs = Procs(logs_dir, env_for(kafka, redis_url, cheap_serving, names, MW_MAX_FRAME_AGE_S="2"))
    store = Store.from_url(redis_url, names["redis_prefix"])
    try:
        produce(kafka, topic, CAMS, 100, ts_ms=int(time.time() * 1000) - 60_000)
        procs.worker("w-stale")
        wait_for(lambda: accounted(store, CAMS) >= 100, 120, "backlog accounted")
        assert sum(store.totals(c).dropped_stale for c in CAMS) == 100
        assert sum(store.totals(c).frames for c in CAMS) == 0
        produce(kafka, topic, CAMS, 50, run="test-2")  # a second producer run: its seqs start again at 0
        wait_for(lambda: accounted(store, CAMS) >= 150, 120, "fresh frames accounted")
        assert sum(store.totals(c).frames for c in CAMS) == 50
    finally:
        procs.stop_all()
        store.close()


def test_topic_fixture_partitions(kafka: str, names: dict[str, str]) -> None:
    ready = ensure_topics([kafka], names["topic"], 4, names["dlq_topic"])
    assert ready[names["topic"]] == 4 and ready[names["dlq_topic"]] == 1


def _claiming(raw: bytes, width: int, height: int) -> bytes:
    """A JPEG with its start-of-frame header rewritten to announce width x height (a header bomb when large)."""
    i = raw.index(b"\xff\xc0")
    return raw[: i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + raw[i + 9 :]


@pytest.mark.timeout(240)
def test_frames_over_the_caps_or_mislabelled_are_dead_lettered_whole(
    kafka: str, redis_url: str, cheap_serving: str, names: dict[str, str], topic: str, logs_dir: Path
) -> None:
    """Header bombs and frames whose mw-w/mw-h lie are rejected before decoding; a frame too large even for the
    dead-letter send still reaches frames.dlq, with its headers and a truncated value."""
    procs = Procs(logs_dir, env_for(kafka, redis_url, cheap_serving, names, MW_MAX_FRAME_BYTES="100000"))
    store = Store.from_url(redis_url, names["redis_prefix"])
    good = frame("cam-a", 1)
    huge = good.jpeg + b"\x00" * (2 * 1024 * 1024)  # over max_frame_bytes, and over the dead-letter producer's limit
    bad: list[tuple[bytes, str]] = [
        (_claiming(good.jpeg, 12000, 12000), F.ERR_TOO_LARGE),  # a header bomb labelled 64x48
        (_claiming(good.jpeg, 640, 480), F.ERR_BAD_SIZE),  # labelled 64x48, the JPEG says 640x480
        (huge, F.ERR_TOO_LARGE),
    ]
    try:
        procs.worker("w-caps")
        p = KafkaProducer(bootstrap_servers=[kafka], max_request_size=4 * 1024 * 1024)
        for i, (value, _) in enumerate(bad):
            p.send(topic, key=good.key, value=value, headers=frame("cam-a", i + 1).headers())  # frames 1-3 of cam-a
        for i in range(5):
            f = frame("cam-a", i + 4)
            p.send(topic, key=f.key, value=f.jpeg, headers=f.headers())
        p.flush()
        p.close()
        wait_for(lambda: store.totals("cam-a").frames == 5 and store.totals("cam-a").invalid == 3, 120, "all accounted")

        dlq = KafkaConsumer(
            names["dlq_topic"], bootstrap_servers=[kafka], auto_offset_reset="earliest", consumer_timeout_ms=3000, group_id=None
        )
        seen: list[tuple[str, dict[str, bytes], int]] = []
        deadline = time.monotonic() + 60
        while len(seen) < len(bad) and time.monotonic() < deadline:
            for rec in dlq:
                h = dict(rec.headers)
                seen.append((h[F.H_ERROR].decode(), h, len(rec.value)))
        dlq.close()
        assert sorted(reason for reason, _, _ in seen) == sorted(reason for _, reason in bad)
        truncated = [(h, n) for _, h, n in seen if F.H_TRUNCATED in h]
        assert len(truncated) == 1
        h, n = truncated[0]
        assert h[F.H_TRUNCATED] == str(len(huge)).encode() and n == F.DLQ_MAX_VALUE_BYTES
        assert h[F.H_CAMERA] == b"cam-a" and h[F.H_SEQ] == b"3", "the dead letter keeps the frame's headers"
        assert store.latest_jpeg("cam-a") is not None and len(store.latest_jpeg("cam-a") or b"") < 100_000
    finally:
        assert procs.stop_all() == {"w-caps": 0}
        store.close()


@pytest.mark.timeout(240)
def test_frames_of_cameras_the_site_does_not_list_create_nothing(
    kafka: str, redis_url: str, cheap_serving: str, names: dict[str, str], topic: str, logs_dir: Path
) -> None:
    """Made-up camera ids are dead-lettered unknown_camera; neither they nor rejected frames become cameras."""
    procs = Procs(logs_dir, env_for(kafka, redis_url, cheap_serving, names, MW_OPEN_REGISTRATION="false"))
    store = Store.from_url(redis_url, names["redis_prefix"])
    store.register_cameras(["cam-a"])  # what the producer does for its site's cameras
    fake = [f"fake-{i:03d}" for i in range(200)]
    try:
        procs.worker("w-site")
        p = KafkaProducer(bootstrap_servers=[kafka])
        for i, cid in enumerate(fake):
            f = frame(cid, i)
            p.send(topic, key=f.key, value=f.jpeg, headers=f.headers())
        rejected = frame("fake-bad", 0)
        p.send(topic, key=rejected.key, value=rejected.jpeg, headers=[h for h in rejected.headers() if h[0] != F.H_VERSION])
        for i in range(10):
            f = frame("cam-a", i)
            p.send(topic, key=f.key, value=f.jpeg, headers=f.headers())
        p.flush()
        p.close()
        dlq = KafkaConsumer(
            names["dlq_topic"], bootstrap_servers=[kafka], auto_offset_reset="earliest", consumer_timeout_ms=3000, group_id=None
        )
        seen: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while len(seen) < len(fake) + 1 and time.monotonic() < deadline:
            for rec in dlq:
                seen[rec.key.decode()] = dict(rec.headers)[F.H_ERROR].decode()
        dlq.close()
        wait_for(lambda: store.totals("cam-a").frames == 10, 120, "the site's camera counted")
        assert seen == {**{cid: F.ERR_UNKNOWN_CAMERA for cid in fake}, "fake-bad": F.ERR_NO_VERSION}
        assert store.camera_ids() == ["cam-a"]
        made = [k for k in store.r.scan_iter(match=names["redis_prefix"] + "*fake*", count=1000)]
        assert made == [], made[:5]
        assert procs["w-site"].alive()
    finally:
        assert procs.stop_all() == {"w-site": 0}
        store.close()
