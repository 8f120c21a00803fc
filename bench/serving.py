"""`python -m bench.serving`: the model in process at batch 1/4/8/16 against the same model behind `python -m serving`
with 1/4/16 concurrent gRPC clients, batching off and on; goal: the server's best ≥ 0.9 × the in-process best."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import report  # noqa: E402
from bench.frames import jpegs as bench_jpegs  # noqa: E402
from bench.inprocess import OpenVinoRunner  # noqa: E402
from bench.load import closed_loop  # noqa: E402
from bench.logs import setup_logging  # noqa: E402
from bench.stack import DEPLOYED_SERVING_ARGS, ROOT, start_server  # noqa: E402
from bench.stats import Summary  # noqa: E402
from maskwatch.model_api import MODEL_NAME  # noqa: E402
from maskwatch.procs import Children  # noqa: E402

logger = logging.getLogger("bench.serving")
GOAL = 0.9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, help="repeats of every configuration (default 3, quick 1)")
    ap.add_argument("--window-s", type=float, help="seconds per measurement (default 8, quick 5)")
    ap.add_argument("--clients", default="1,4,16", help="concurrent clients to try")
    ap.add_argument("--client-batch", type=int, default=4, help="frames per Predict call of each client (default 4)")
    ap.add_argument("--batches", default="1,4,8,16", help="in-process batch sizes")
    ap.add_argument("--model-base-path", type=Path, default=ROOT / "models" / MODEL_NAME)
    ap.add_argument("--results", type=Path, default=report.RESULTS)
    args = ap.parse_args(argv)
    setup_logging()
    reps = args.reps or (1 if args.quick else 3)
    window = args.window_s or (5.0 if args.quick else 8.0)
    clients = [int(x) for x in args.clients.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    jpegs = bench_jpegs(32)
    base = args.model_base_path.resolve()
    version = max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    log_dir = ROOT / ".maskwatch" / "bench-logs" / f"serving-{time.strftime('%Y%m%d-%H%M%S')}"
    results: dict[str, list[dict[str, float]]] = {}
    with Children(log_dir, cwd=ROOT) as procs:
        logger.info("starting two servers (batching off, on) and loading the model in process")
        servers = {
            "off": start_server(procs, base, "serving-nobatch", "--runtime", "openvino"),
            "on": start_server(procs, base, "serving-batch", *DEPLOYED_SERVING_ARGS),
        }
        model = OpenVinoRunner(version)  # the runtime `maskwatch up` serves with (DEPLOYED_SERVING_ARGS)
        threads = sorted({1, os.cpu_count() or 1})  # one caller, and as many concurrent callers as cores
        configs: list[tuple[str, Any]] = [("inprocess", (b, t)) for t in threads for b in batches]
        configs += [(f"grpc_batching_{mode}", k) for mode in ("off", "on") for k in clients]
        for rep in range(reps):
            shift = rep % len(configs)
            for kind, k in configs[shift:] + configs[:shift]:
                if kind == "inprocess":
                    w = model.window(jpegs, k[0], window, k[1])
                    row = {"fps": w.fps, "fps_per_core": w.fps_per_core, "cores": w.cores}
                    key = f"inprocess_b{k[0]}_t{k[1]}"
                else:
                    srv = servers[kind.rsplit("_", 1)[1]]
                    cpu0, t0 = procs.cpu_seconds([srv.name]), time.monotonic()
                    load = closed_loop(srv.target, jpegs, k, args.client_batch, window)
                    cpu = procs.cpu_seconds([srv.name]) - cpu0
                    wall = time.monotonic() - t0
                    row = {"fps": load.fps, "fps_per_core": load.fps * wall / cpu if cpu else float("nan"), "cores": cpu / wall, "call_ms": load.mean_call_ms}
                    key = f"{kind}_c{k}"
                results.setdefault(key, []).append(row)
                logger.info("%s rep=%d fps=%.2f fps_per_core=%.2f", key, rep + 1, row["fps"], row["fps_per_core"])
    summary: dict[str, dict[str, Any]] = {
        key: {
            "fps": Summary.of(r["fps"] for r in rows).as_dict(),
            "fps_per_core": Summary.of(r["fps_per_core"] for r in rows).as_dict(),
            "server_cores": round(Summary.of(r["cores"] for r in rows).median, 2),
            **({"call_ms": round(Summary.of(r["call_ms"] for r in rows).median, 1)} if "call_ms" in rows[0] else {}),
        }
        for key, rows in results.items()
    }
    med = {k: v["fps"]["median"] for k, v in summary.items()}
    best_in = max((k for k in med if k.startswith("inprocess")), key=med.__getitem__)
    best_srv = max((k for k in med if k.startswith("grpc")), key=med.__getitem__)
    med_core = {k: v["fps_per_core"]["median"] for k, v in summary.items()}
    best_in_core = max((k for k in med_core if k.startswith("inprocess")), key=med_core.__getitem__)
    best_srv_core = max((k for k in med_core if k.startswith("grpc")), key=med_core.__getitem__)
    ratio = med[best_srv] / med[best_in]
    out = {
        **report.stamp(),
        "quick": args.quick,
        "config": {"reps": reps, "window_s": window, "client_batch": args.client_batch, "batching_parameters_file": "serving/batching.config"},
        "inprocess_best": {"config": best_in, "fps": med[best_in]},
        "server_best": {"config": best_srv, "fps": med[best_srv]},
        "server_over_inprocess": round(ratio, 3),
        "server_over_inprocess_per_core": round(med_core[best_srv_core] / med_core[best_in_core], 3),
        "goal": GOAL,
        "goal_met": ratio >= GOAL,
        "results": summary,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "serving.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "# Model server vs in-process model",
        "",
        f"{out['date']}, commit `{str(out['git_commit'])[:12]}`, {out['machine']['cores']} cores {out['machine']['cpu_model']}; "
        f"clients send {args.client_batch} frames per call; median of {reps} runs of {window:g} s.",
        "",
        "| configuration | fps (median) | range | fps per busy core | cores busy (server, or this process in process) |",
        "|---|---|---|---|---|",
    ]
    for key, v in summary.items():
        lines.append(f"| {key} | {v['fps']['median']:.2f} | {v['fps']['low']:.2f}–{v['fps']['high']:.2f} | {v['fps_per_core']['median']:.2f} | {v['server_cores']} |")
    lines += [
        "",
        f"Server best ({best_srv}) / in-process best ({best_in}) = **{ratio:.3f}** (goal ≥ {GOAL}: {'met' if ratio >= GOAL else 'missed'}); "
        f"per busy core {out['server_over_inprocess_per_core']:.3f}.",
        "",
    ]
    (args.results / "serving.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
