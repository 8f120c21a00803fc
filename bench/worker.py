"""`python -m bench.worker`: one worker draining a backlog against `python -m serving` at max_poll_records 1/8/16,
against the server's own throughput for the same call size (one closed-loop client, measured in alternation), and
the share of wall time in which no model call of the worker is running; goal: worker ≥ 0.9 × server.

With --profile (and py-spy on PATH, in $PY_SPY or pip-installed), one drain per setting is sampled with py-spy
(idle samples included) and the worker's main-thread wall time is split by what it was doing."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import report  # noqa: E402
from bench.frames import jpegs as bench_jpegs  # noqa: E402
from bench.load import closed_loop  # noqa: E402
from bench.logs import setup_logging  # noqa: E402
from bench.pipeline import Pipeline  # noqa: E402
from bench.profile import phases_of, py_spy  # noqa: E402
from bench.scaling import delete_topics  # noqa: E402
from bench.stack import ROOT, start_server  # noqa: E402
from bench.stats import Summary, paired_ratio  # noqa: E402
from maskwatch.model_api import MODEL_NAME  # noqa: E402
from maskwatch.procs import Children  # noqa: E402

logger = logging.getLogger("bench.worker")
GOAL = 0.9

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-poll-records", default="1,8,16")
    ap.add_argument("--rounds", type=int, help="drains per setting (default 4, in ABBA order with the server-only runs; quick 1)")
    ap.add_argument("--drain-s", type=float, help="seconds one backlog should last (default 20, quick 8)")
    ap.add_argument("--profile", action="store_true", help="py-spy the worker during one extra drain per setting")
    ap.add_argument("--model-base-path", type=Path, default=ROOT / "models" / MODEL_NAME)
    ap.add_argument("--results", type=Path, default=report.RESULTS)
    args = ap.parse_args(argv)
    setup_logging()
    rounds = args.rounds or (1 if args.quick else 4)
    drain_s = args.drain_s or (8.0 if args.quick else 20.0)
    window = max(4.0, drain_s / 2)
    jpegs = bench_jpegs(32)
    spy = py_spy() if args.profile else None
    if args.profile and spy is None:
        logger.warning("--profile: py-spy not found (pip install py-spy, or set PY_SPY)")
    log_dir = ROOT / ".maskwatch" / "bench-logs" / f"worker-{time.strftime('%Y%m%d-%H%M%S')}"
    out_rows: dict[str, Any] = {}
    with Children(log_dir, cwd=ROOT) as procs:
        kafka, redis_url = procs.start_broker(), procs.start_redis()
        server = start_server(procs, args.model_base_path.resolve())
        est = closed_loop(server.target, jpegs, 1, 16, window).fps  # warm the server, size the first backlog
        for mpr in (int(x) for x in args.max_poll_records.split(",")):
            pipe = Pipeline(procs, Path(), jpegs, workers=1, max_poll_records=mpr, kafka=kafka, redis_url=redis_url, server=server, tag=f"wk{mpr}")
            try:
                pipe.warm_up(max(24, mpr * 3))
                drains, loads = [], []
                for r in range(rounds):
                    # ABBA order: a drift in the machine's load does not favour either side
                    if r % 2:
                        load = closed_loop(server.target, jpegs, 1, mpr, window)
                    d = pipe.drain(max(mpr * 10, 40, int(est * drain_s)))
                    if not r % 2:
                        load = closed_loop(server.target, jpegs, 1, mpr, window)
                    drains.append(d)
                    loads.append(load)
                    est = d.fps
                    logger.info("max_poll_records=%d round=%d worker_fps=%.2f server_fps=%.2f model_busy=%.2f", mpr, r + 1, d.fps, load.fps, d.model_busy)
                hb = pipe.store.heartbeats("worker").get(pipe.workers[0], {})
                profile = None
                if spy:
                    pid = procs[pipe.workers[0]].pid
                    raw = log_dir / f"pyspy-mpr{mpr}.txt"
                    secs = max(5, int(drain_s * 0.6))
                    rec = subprocess.Popen([spy, "record", "--idle", "--format", "raw", "-r", "50", "-d", str(secs), "-p", str(pid), "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    pipe.drain(max(40, int(est * drain_s)))
                    rec.wait(timeout=secs + 60)
                    profile = phases_of(raw.read_text()) if raw.exists() else None
                    logger.info("max_poll_records=%d profile=%s", mpr, profile)
                ratio = paired_ratio([d.fps for d in drains], [x.fps for x in loads])
                out_rows[str(mpr)] = {
                    "worker_fps": Summary.of(d.fps for d in drains).as_dict(),
                    "server_fps_same_call_size": Summary.of(x.fps for x in loads).as_dict(),
                    "worker_over_server": ratio.as_dict(3),
                    "outside_model_share": round(1 - Summary.of(d.model_busy for d in drains).median, 3),
                    "mean_frames_per_call": round(int(hb.get("frames", 0)) / max(1, int(hb.get("batches", 0) or 1)), 2),
                    "worker_cores": round(Summary.of(d.cpu_by_process.get("workers", 0) / d.window_s for d in drains).median, 3),
                    "profile_main_thread": profile,
                }
            finally:
                pipe.close()
                delete_topics(kafka, [pipe.names.topic, pipe.names.dlq_topic])
    best = max(out_rows.values(), key=lambda v: v["worker_fps"]["median"])
    met = {k: v["worker_over_server"]["median"] >= GOAL for k, v in out_rows.items()}
    out = {
        **report.stamp(),
        "quick": args.quick,
        "config": {"rounds": rounds, "drain_s": drain_s, "server": "python -m serving, no batching", "partitions": 12, "cameras": 12},
        "goal": GOAL,
        "goal_met": met,
        "best_worker_over_server": best["worker_over_server"]["median"],
        "results": out_rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "worker.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "# One worker vs the model server",
        "",
        f"{out['date']}, commit `{str(out['git_commit'])[:12]}`, {out['machine']['cores']} cores {out['machine']['cpu_model']}; "
        f"median of {rounds} drains; the server's own throughput is one closed-loop client sending calls of max_poll_records frames.",
        "",
        "| max_poll_records | worker fps | server fps (same call size) | worker / server | time with no model call running | frames per call |",
        "|---|---|---|---|---|---|",
    ]
    for k, v in out_rows.items():
        lines.append(
            f"| {k} | {v['worker_fps']['median']:.2f} | {v['server_fps_same_call_size']['median']:.2f} | "
            f"**{v['worker_over_server']['median']:.3f}** ({'met' if met[k] else 'missed'}) | {v['outside_model_share']:.1%} | {v['mean_frames_per_call']} |"
        )
    for k, v in out_rows.items():
        if v["profile_main_thread"]:
            lines += ["", f"Worker main thread at max_poll_records={k} (py-spy, wall time): " + ", ".join(f"{p} {s:.1%}" for p, s in v["profile_main_thread"].items())]
    lines.append("")
    (args.results / "worker.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
