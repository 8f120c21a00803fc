"""The broker goes away for 10 s under four running cameras: the producer stays up, counts its drops with
bounded memory, and sends again by itself when the broker is back (own Tansu, same port)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from maskwatch.procs import Child, free_port, port_open, py, tansu_command, wait_for
from maskwatch.store import Store
from maskwatch.topics import ensure_topics
from producer.settings import ProducerSettings
from tests.integration.test_producer_mjpeg import run_producer_thread

ROOT = Path(__file__).resolve().parents[2]
CAMERAS = ["c1", "c2", "c3", "c4"]
BUFFER = 1024 * 1024  # the producer's Kafka send buffer, small so the outage fills it


class Broker:
    """A Tansu of this test's own on a fixed port, so it can be stopped and started again at the same address."""

    def __init__(self, log_dir: Path, name: str) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.child = Child(name, tansu_command(self.port))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.child.start(self.log_dir).wait_ready(lambda: port_open("127.0.0.1", self.port), 30, "tansu to listen")

    def stop(self) -> None:
        if self.child.proc is not None:
            self.child.stop(10)
        wait_for(lambda: not port_open("127.0.0.1", self.port), 10, "tansu to stop listening")


@pytest.fixture
def broker(logs_dir: Path) -> Iterator[Broker]:
    b = Broker(logs_dir, "tansu-outage")
    b.start()
    yield b
    b.stop()


def _counts(store: Store, field: str) -> dict[str, int]:
    return {c: int(store.camera_info(c).get(field, "0") or 0) for c in CAMERAS}


@pytest.mark.timeout(180)
def test_broker_outage_is_counted_and_survived(
    broker: Broker, redis_url: str, names: dict[str, str], tmp_path: Path, logs_dir: Path
) -> None:
    ensure_topics([broker.bootstrap], names["topic"], 4, names["dlq_topic"])
    site = tmp_path / "site.yaml"
    site.write_text(
        "site: t\ncameras:\n" + "".join(f"  - {{id: {c}, source: 'synthetic:mixed', fps: 5}}\n" for c in CAMERAS)
    )
    metrics_port = free_port()
    env = {
        "MW_KAFKA": broker.bootstrap,
        "MW_REDIS_URL": redis_url,
        "MW_TOPIC": names["topic"],
        "MW_REDIS_PREFIX": names["redis_prefix"],
        "MW_STATUS_INTERVAL_S": "0.5",
        "MW_KAFKA_BUFFER_BYTES": str(BUFFER),
    }
    argv = py("producer", "--site", str(site), "--metrics-port", str(metrics_port))
    proc = Child(f"producer-outage-{names['topic']}", argv, env, cwd=ROOT).start(logs_dir)
    store = Store.from_url(redis_url, names["redis_prefix"])
    ps = psutil.Process(proc.pid)

    def producer_alive() -> None:
        assert proc.alive(), f"producer exited rc={proc.returncode}: {proc.log()[-2000:]}"

    def all_at_least(field: str, base: dict[str, int], more: int) -> bool:
        producer_alive()
        now = _counts(store, field)
        return all(now[c] >= base[c] + more for c in CAMERAS)

    try:
        zero = dict.fromkeys(CAMERAS, 0)
        wait_for(lambda: all_at_least("sent", zero, 5), 60, "every camera to send")
        rss_before = ps.memory_info().rss

        broker.stop()
        down_at = time.monotonic()
        sent_at_stop = _counts(store, "sent")
        dropped_at_stop = _counts(store, "dropped_broker")
        peak_inflight = 0
        while time.monotonic() - down_at < 10:  # the broker stays away for 10 s
            producer_alive()
            hb = store.heartbeats("producer")
            peak_inflight = max([peak_inflight, *(int(h.get("inflight_bytes", 0)) for h in hb.values())])
            time.sleep(0.5)
        dropped = _counts(store, "dropped_broker")
        assert all(dropped[c] > dropped_at_stop[c] for c in CAMERAS), dropped
        assert all(
            s <= sent_at_stop[c] + 10 for c, s in _counts(store, "sent").items()
        )  # only what was already in flight
        assert peak_inflight <= BUFFER
        assert ps.memory_info().rss - rss_before < 64 * 2**20, "memory grows while the broker is away"
        assert all(store.camera_info(c)["status"] == "online" for c in CAMERAS)  # the cameras themselves are fine

        broker.start()
        ensure_topics([broker.bootstrap], names["topic"], 4, names["dlq_topic"])  # an in-memory broker forgot it
        sent_at_restart = _counts(store, "sent")
        wait_for(lambda: all_at_least("sent", sent_at_restart, 5), 60, "sending to resume by itself")

        body = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'maskwatch_producer_frames_total{camera="c1",reason="dropped_broker"}' in body
        assert "maskwatch_producer_encode_seconds_bucket" in body
        producer_alive()
        assert proc.stop(15) == 0
    finally:
        proc.stop(5)
        store.close()


@pytest.mark.timeout(120)
def test_producer_started_before_the_broker_sends_once_it_answers(
    redis_url: str, names: dict[str, str], logs_dir: Path
) -> None:
    late = Broker(logs_dir, "tansu-late")  # not started yet
    settings = ProducerSettings(
        kafka=late.bootstrap,
        redis_url=redis_url,
        topic=names["topic"],
        redis_prefix=names["redis_prefix"],
        demo_cameras=2,
        demo_fps=5,
        status_interval_s=0.5,
    )
    store = Store.from_url(redis_url, names["redis_prefix"])
    thread, stop, rc = run_producer_thread(settings)
    try:

        def info(field: str) -> list[str]:
            return [store.camera_info(c).get(field, "") for c in ("demo-1", "demo-2")]

        wait_for(lambda: all(int(v or 0) > 0 for v in info("dropped_broker")), 30, "drops counted while no broker")
        assert info("status") == ["online", "online"] and info("sent") == ["0", "0"]
        late.start()
        ensure_topics([late.bootstrap], names["topic"], 4, names["dlq_topic"])
        wait_for(lambda: all(int(v or 0) >= 5 for v in info("sent")), 60, "frames sent once the broker answers")
    finally:
        stop.set()
        thread.join(15)
        late.stop()
        store.close()
    assert rc == [0]
