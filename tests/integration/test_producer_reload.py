"""Hot reload of the site file (SIGHUP and `maskwatch cameras reload`): cameras are added, removed and changed while
the others keep running and keep their sequence numbers; a broken file changes nothing and says why."""

from __future__ import annotations

import signal
from collections import defaultdict
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from maskwatch.frames import parse_message
from maskwatch.procs import Child, py, wait_for
from maskwatch.store import Store
from producer.reload import cameras_reload, request_reload

ROOT = Path(__file__).resolve().parents[2]


def _site(cams: dict[str, float]) -> str:
    return "site: t\ncameras:\n" + "".join(
        f"  - {{id: {c}, source: 'synthetic:bare@160x120', fps: {fps}}}\n" for c, fps in cams.items()
    )


def _consume(kafka: str, topic: str, want: dict[str, int]) -> dict[str, list[tuple[str, int]]]:
    """Every frame of the topic, per camera in partition order: (producer, seq)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=[kafka], auto_offset_reset="earliest", enable_auto_commit=False)
    seen: dict[str, list[tuple[str, int]]] = defaultdict(list)
    try:

        def complete() -> bool:
            for records in consumer.poll(timeout_ms=500).values():
                for m in records:
                    f = parse_message(m.key, m.value, m.headers)
                    seen[f.camera_id].append((f.producer, f.seq))
            return all(len(seen[c]) >= n for c, n in want.items())

        wait_for(complete, 60, "every sent frame to be read back")
    finally:
        consumer.close()
    return seen


@pytest.mark.timeout(180)
def test_reload_adds_removes_and_changes_cameras_without_touching_the_others(
    kafka: str, redis_url: str, names: dict[str, str], topic: str, tmp_path: Path, logs_dir: Path
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(_site({"a": 5, "b": 5, "c": 5}))
    env = {
        "MW_KAFKA": kafka,
        "MW_REDIS_URL": redis_url,
        "MW_TOPIC": topic,
        "MW_REDIS_PREFIX": names["redis_prefix"],
        "MW_STATUS_INTERVAL_S": "0.5",
    }
    proc = Child(f"producer-reload-{topic}", py("producer", "--site", str(site)), env, cwd=ROOT).start(logs_dir)
    store = Store.from_url(redis_url, names["redis_prefix"])

    def field(cid: str, name: str) -> str:
        assert proc.alive(), f"producer exited rc={proc.returncode}"
        return store.camera_info(cid).get(name, "")

    def sent(cid: str) -> int:
        return int(field(cid, "sent") or 0)

    try:
        wait_for(lambda: all(sent(c) >= 5 for c in "abc"), 60, "cameras a, b, c to send")
        wait_for(lambda: bool(store.heartbeats("producer")), 10, "the producer's heartbeat")

        # SIGHUP: c leaves, d arrives; a and b are untouched
        site.write_text(_site({"a": 5, "b": 5, "d": 5}))
        a_before = sent("a")
        proc.send_signal(signal.SIGHUP, group=False)
        wait_for(lambda: field("c", "status") == "retired" and sent("d") >= 5, 30, "c retired and d sending")
        assert "removed" in field("c", "last_error")
        # retired: c leaves the site's cameras (overview, /api/cameras, site figures); its history answers by id
        assert "c" not in store.camera_ids() and store.has_camera("c")
        assert sent("a") > a_before and field("a", "status") == "online"
        c_final = sent("c")

        # `maskwatch cameras reload` (through Redis): b's rate changes, so b restarts and continues its sequence
        site.write_text(_site({"a": 5, "b": 4, "d": 5}))
        outcomes = request_reload(store, timeout_s=15)
        assert len(outcomes) == 1 and outcomes[0].ok, outcomes
        assert "changed=1" in outcomes[0].message and "unchanged=2" in outcomes[0].message
        wait_for(lambda: field("b", "target_fps") == "4.0", 10, "b at its new rate")
        b_at_change = sent("b")
        wait_for(lambda: sent("b") >= b_at_change + 3, 20, "b sending again")

        # a broken file: nothing changes, the command says where the mistake is
        site.write_text(_site({"a": 5, "b": 4, "d": 5}).replace("fps: 4", "fps: -4"))
        out = (tmp_path / "reload.out").open("w+")
        assert cameras_reload(redis_url, names["redis_prefix"], timeout_s=15, out=out) == 1
        out.seek(0)
        said = out.read()
        assert "NOT reloaded" in said and f"{site}:4:" in said and "camera=b" in said and "field=fps" in said, said
        a_now = sent("a")
        wait_for(lambda: sent("a") >= a_now + 3 and sent("b") >= b_at_change + 6, 20, "cameras still running")

        assert proc.stop(15) == 0
    finally:
        proc.stop(5)
    final = {c: int(store.camera_info(c)["sent"]) for c in "abcd"}
    store.close()
    assert final["c"] == c_final
    frames = _consume(kafka, topic, final)
    for cid in "abcd":
        producers = {p for p, _ in frames[cid]}
        seqs = [s for _, s in frames[cid]]
        assert len(producers) == 1, producers
        assert seqs == list(range(len(seqs))), f"camera {cid}: sequence not continuous: {seqs}"
        assert len(seqs) == final[cid]
