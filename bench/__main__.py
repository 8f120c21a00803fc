"""`python -m bench`: the benchmark suite (model ceiling, pipeline, latency, naive baseline, scaling) or, with
--soak, the long soak; writes bench/results/latest.json, latest.md and PNG charts."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import report  # noqa: E402
from bench.logs import setup_logging  # noqa: E402
from bench.stack import ROOT  # noqa: E402
from maskwatch.model_api import MODEL_NAME  # noqa: E402
from maskwatch.procs import Children  # noqa: E402

logger = logging.getLogger("bench")


def _stop_on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM ends a benchmark as Ctrl-C does: its child processes are stopped on the way out, none orphaned."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a short smoke version (1 repeat, short windows)")
    ap.add_argument("--soak", action="store_true", help="run the soak instead of the suite")
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--minutes", "--soak-minutes", type=float, default=60.0, help="soak length in minutes (default 60)")
    length.add_argument("--hours", type=float, help="soak length in hours (24 for a day-long run)")
    ap.add_argument("--skip-scaling", action="store_true", help="leave out the worker scaling runs")
    ap.add_argument("--model-base-path", type=Path, default=ROOT / "models" / MODEL_NAME)
    ap.add_argument("--results", type=Path, default=report.RESULTS, help="where latest.json/md and charts go")
    ap.add_argument("--logs", type=Path, default=ROOT / ".maskwatch" / "bench-logs", help="child process logs")
    args = ap.parse_args(argv)
    setup_logging()
    if not (args.model_base_path / "1").exists() and not any(p.name.isdigit() for p in args.model_base_path.glob("*")):
        print(f"error: no model under {args.model_base_path}: run `python -m model.export` (make setup does)", file=sys.stderr)
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    log_dir = args.logs / time.strftime("%Y%m%d-%H%M%S")
    stamp = report.stamp()
    latest = args.results / "latest.json"
    if args.soak:
        from bench.soak import SoakConfig, run_soak

        cfg = SoakConfig(minutes=args.hours * 60 if args.hours else args.minutes)
        logger.info("soak: %s minutes, %d cameras at %s fps; logs in %s", cfg.minutes, cfg.cameras, cfg.fps, log_dir)
        with Children(log_dir, cwd=ROOT) as procs:
            soak = run_soak(procs, args.model_base_path.resolve(), cfg)
        samples = soak["samples"]
        report.chart_soak(samples, args.results / "soak_memory.png", f"soak: {cfg.cameras} cameras × {cfg.fps} fps, {cfg.minutes:g} min")
        soak["samples"] = report.thin(samples, 40)  # the chart has them all; the JSON stays small
        stamp["machine"] = report.machine()
        new = {
            "soak_rss_growth_pct": soak["soak_rss_growth_pct"],
            "soak_frames_lost": soak["soak_frames_lost"],
            "soak_frames_double_counted": soak["soak_frames_double_counted"],
            "soak_rss_peak_growth_pct": soak["soak_rss_peak_growth_pct"],
            "soak_redis_other_growth_kib": soak["soak_redis_other_growth_kib"],
            "details": {"soak": soak},
            "soak_rotations": soak["soak_rotations"],
            "stamp": {**stamp, "quick": cfg.minutes < 60},
        }
        data = report.merge(report.load_previous(latest), new, report.SOAK_KEYS, "soak")  # read now: a suite may have run meanwhile
    else:
        from bench.suite import SuiteConfig, run_main

        cfg_main = SuiteConfig.make(args.model_base_path.resolve(), args.quick, args.skip_scaling)
        logger.info("suite: quick=%s; logs in %s", cfg_main.quick, log_dir)
        figures = run_main(cfg_main, log_dir)
        lat = figures.pop("_latencies_ms")
        det = figures["details"]
        report.chart_latency(lat, args.results / "latency_hist.png", f"latency at {det['latency']['rate_fps']:.1f} fps (50 % of saturation), {det['latency']['n']} frames")
        if "scaling" in det:
            sc = det["scaling"]
            counts = sc["config"]["worker_counts"]
            report.chart_scaling(counts, sc["scaling_fps"], [sc["ideal_fps"][str(n)] for n in counts], args.results / "scaling.png", f"workers vs sleep model ({sc['config']['sleep_ms_per_call']:g} ms/call), {sc['config']['partitions']} partitions")
        stamp["machine"] = report.machine()
        figures["stamp"] = {**stamp, "quick": cfg_main.quick}
        data = report.merge(report.load_previous(latest), figures, report.MAIN_KEYS, "main")
    data["details"]["goals"] = goals(data, args.results)
    report.write_json(latest, data)
    (args.results / "latest.md").write_text(report.markdown(data))
    print((args.results / "latest.md").read_text())
    return 0


def goals(data: dict[str, object], results: Path) -> list[dict[str, object]]:
    """The issue's goals, from this file and from the last `bench.serving` / `bench.worker` runs beside it."""
    out: list[dict[str, object]] = []
    def figure(key: str) -> float | None:
        value = data.get(key)
        return float(value) if isinstance(value, int | float) else None

    speedup, core, delta = figure("runtime_speedup"), figure("runtime_speedup_per_core"), figure("runtime_map_delta")
    if speedup is not None:
        out.append({"what": "runtime_speedup ≥ 2.0 (openvino / tensorflow, wall-clock)", "value": speedup, "met": speedup >= 2.0})
    if core is not None:
        out.append({"what": "the same per busy core ≥ 2.0", "value": core, "met": core >= 2.0})
    if delta is not None:
        out.append({"what": "runtime_map_delta within ±0.005", "value": delta, "met": abs(delta) <= 0.005})
    over, naive, p99 = figure("pipeline_over_model"), figure("speedup_vs_naive"), figure("latency_p99_ms")
    if over is not None:
        out.append({"what": "pipeline ≥ 0.9 × the model ceiling", "value": over, "met": over >= 0.9})
    if naive is not None:
        out.append({"what": "≥ 5 × the seed-style loop per core", "value": naive, "met": naive >= 5.0})
    if p99 is not None:
        out.append({"what": "p99 capture→Redis ≤ 250 ms at half load", "value": p99, "met": p99 <= 250.0})
    lost = data.get("soak_frames_lost")
    if lost is not None:
        out.append({"what": "soak: no frame lost", "value": lost, "met": lost == 0})
    double = data.get("soak_frames_double_counted")
    if double is not None:
        out.append({"what": "soak: no frame counted twice", "value": double, "met": double == 0})
    peak = data.get("soak_rss_peak_growth_pct")
    if isinstance(peak, (int, float)):
        what = "soak: every process's 5-min RSS peak within 10 % after 10 min (Redis aside: it keeps days of history)"
        out.append({"what": what, "value": peak, "met": peak <= 10.0})
    other = data.get("soak_redis_other_growth_kib")
    if isinstance(other, (int, float)):
        what = "soak: Redis grows only by its history (every other kind of key but the newest frames ≤ +64 KiB after 10 min)"
        out.append({"what": what, "value": other, "met": other <= 64.0})
    srv = report.load_previous(results / "serving.json")
    if srv:
        out.append(
            {
                "what": f"bench.serving ({srv.get('date')}): server best ≥ 0.9 × in-process best",
                "value": f"{srv['server_over_inprocess']} ({srv['server_best']['config']} / {srv['inprocess_best']['config']})",
                "met": bool(srv.get("goal_met")),
            }
        )
    wk = report.load_previous(results / "worker.json")
    for mpr, row in (wk.get("results") or {}).items():
        ratio = row["worker_over_server"]["median"]
        out.append(
            {
                "what": f"bench.worker ({wk.get('date')}): one worker ≥ 0.9 × server at max_poll_records={mpr}",
                "value": ratio,
                "met": ratio >= 0.9,
            }
        )
    return out


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        logger.warning("interrupted: child processes stopped, no results written")
        sys.exit(0)
