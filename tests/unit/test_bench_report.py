"""The benchmark's result files: main and soak runs merge without erasing each other; the table names every figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.__main__ import goals
from bench.profile import phases_of
from bench.report import MAIN_KEYS, SOAK_KEYS, markdown, merge, thin
from bench.soak import key_kind, other_growth


def stamp(date: str) -> dict[str, Any]:
    return {"date": date, "git_commit": "abc", "git_dirty": False, "machine": {"cores": 2, "cpu_model": "x"}}


def test_a_soak_run_keeps_the_main_figures() -> None:
    main = merge({}, {"model_limit_fps": 12.0, "scaling_fps": [1.0, 2.0], "details": {"pipeline": {"a": 1}}, "stamp": stamp("d1")}, MAIN_KEYS, "main")
    both = merge(main, {"soak_rss_growth_pct": 1.5, "soak_frames_lost": 0, "details": {"soak": {"b": 2}}, "stamp": stamp("d2")}, SOAK_KEYS, "soak")
    assert both["model_limit_fps"] == 12.0
    assert both["scaling_fps"] == [1.0, 2.0]
    assert both["soak_frames_lost"] == 0
    assert set(both["details"]) == {"pipeline", "soak"}
    assert both["runs"]["main"]["date"] == "d1" and both["runs"]["soak"]["date"] == "d2"
    assert both["date"] == "d2"


def test_a_main_run_replaces_main_figures_and_keeps_the_soak() -> None:
    old = merge({}, {"soak_rss_growth_pct": 3.0, "soak_frames_lost": 0, "details": {"soak": {}}, "stamp": stamp("d1")}, SOAK_KEYS, "soak")
    new = merge(old, {"pipeline_fps": 9.0, "details": {}, "stamp": stamp("d2")}, MAIN_KEYS, "main")
    assert new["pipeline_fps"] == 9.0 and new["soak_rss_growth_pct"] == 3.0
    assert new["model_limit_fps"] is None  # every key is present, unmeasured ones as null


def test_every_headline_key_is_present_after_a_merge() -> None:
    data = merge({}, {"details": {}, "stamp": stamp("d")}, MAIN_KEYS, "main")
    assert set(MAIN_KEYS) | set(SOAK_KEYS) <= set(data)


def test_markdown_lists_every_headline_figure() -> None:
    data = merge({}, {"pipeline_fps": 9.5, "details": {}, "stamp": stamp("d")}, MAIN_KEYS, "main")
    text = markdown(data)
    for key in (*MAIN_KEYS, *SOAK_KEYS):
        assert f"`{key}`" in text
    assert "**9.50**" in text


def test_phases_of_splits_the_worker_main_thread() -> None:
    raw = "\n".join(
        [
            "<module> (worker/__main__.py:1);run_worker (/work/main/worker/app.py:9);run (/work/main/worker/consumer.py:2);Worker._finish (/work/main/worker/consumer.py:3);Inference.detections (/work/main/worker/inference.py:4);result (grpc/_channel.py:5) 6",
            "<module> (worker/__main__.py:1);run_worker (/work/main/worker/app.py:9);run (/work/main/worker/consumer.py:2);_poll (/work/main/worker/consumer.py:3);poll (kafka/consumer/group.py:4) 3",
            "<module> (worker/__main__.py:1);run_worker (/work/main/worker/app.py:9);run (/work/main/worker/consumer.py:2);_finish (/work/main/worker/consumer.py:3);commit_batch (/srv/maskwatch/store.py:4) 1",
            "heartbeat_thread (kafka/coordinator/base.py:1);wait (threading.py:2) 50",
        ]
    )
    assert phases_of(raw) == {"model: waiting for Predict": 0.6, "kafka poll / fetch / decode": 0.3, "redis transaction": 0.1}
    assert phases_of("") == {}


def test_thin_keeps_the_ends_and_at_most_about_n() -> None:
    rows = list(range(121))
    kept = thin(rows, 40)
    assert kept[0] == 0 and kept[-1] == 120
    assert len(kept) <= 42
    assert thin([1, 2, 3], 40) == [1, 2, 3]


def test_markdown_shows_the_runtimes_accuracy_and_the_profile() -> None:
    details = {
        "accuracy": {
            "images": 124,
            "openvino": {"faces_found_delta_pct": 0.0, "parity": {"rows": 843, "unmatched": 5, "extra": 4, "score_differs": 30, "class_differs": 3}},
        },
        "profile": {"faces_per_frame": 2.5, "ms_per_frame": {"detector": 30.0, "crops": 10.0}, "share": {"detector": 0.75, "crops": 0.25}},
    }
    data = merge({}, {"runtime_speedup": 1.9, "runtime_map_delta": 0.0017, "details": details, "stamp": stamp("d")}, MAIN_KEYS, "main")
    text = markdown(data)
    assert "**1.90**" in text and "**0.0017**" in text and "on 124 validation images" in text
    assert "rows past tolerance 9 boxes / 30 scores / 3 classes of 843" in text
    assert "| detector | 30.00 | 75 % |" in text


def test_redis_history_grows_by_design_and_any_other_kind_of_key_is_growth() -> None:
    """The soak weighs Redis by kind of key: minute buckets and snapshots pile up until their TTLs; a list or hash
    that grows outside the history (a leak) counts."""
    assert key_kind("mw:m:cam-1:29511360", "mw:") == "m" and key_kind("mw:offsets:g:frames.60", "mw:") == "offsets"
    before = {"m": {"keys": 10, "bytes": 3_400}, "snap": {"keys": 1, "bytes": 2_500}, "offsets": {"keys": 5, "bytes": 1_000}}
    grown = {"m": {"keys": 70, "bytes": 23_800}, "snap": {"keys": 9, "bytes": 22_500}, "offsets": {"keys": 5, "bytes": 1_100}}
    assert other_growth(before, grown) == 100
    assert other_growth({**before, "latest": {"keys": 8, "bytes": 200_000}}, {**grown, "latest": {"keys": 8, "bytes": 260_000}}) == 100
    leaked = {**grown, "rejections": {"keys": 1, "bytes": 90_000}}
    assert other_growth(before, leaked) == 90_100
    level = {g["what"]: g["met"] for g in goals({"soak_redis_other_growth_kib": 0.1}, Path("/nonexistent"))}
    leaking = {g["what"]: g["met"] for g in goals({"soak_redis_other_growth_kib": 88.0}, Path("/nonexistent"))}
    assert list(level.values()) == [True] and list(leaking.values()) == [False]
