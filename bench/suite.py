"""The `python -m bench` suite: which measurements run, in which order, and the headline figures derived from them.

Order matters on a shared machine: the in-process model, the pipeline and the naive baseline are measured in
alternating rounds (the pipeline drains a backlog, then the model runs while the pipeline idles, then the naive
loop), so every ratio compares figures taken minutes apart rather than at different times of day.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.frames import frame_set
from bench.inprocess import ModelRunner, NaiveRunner, OpenVinoRunner, Window
from bench.pipeline import Drain, Pipeline
from bench.runtime import accuracy, eval_data, profile
from bench.scaling import ScalingConfig, run_scaling
from bench.sleep_model import export_sleep_model
from bench.stack import DEPLOYED_SERVING_ARGS, ROOT, start_server
from bench.stats import Summary, paired_ratio, percentile
from maskwatch.procs import Children

logger = logging.getLogger(__name__)

BATCH_SIZES = (1, 4, 8, 16)
# The model server's runtimes, measured side by side; the second is what `maskwatch up` runs (maskwatch.stack).
TENSORFLOW, OPENVINO = "tensorflow", "openvino"
DEFAULT_RUNTIME = OPENVINO


@dataclass(frozen=True)
class SuiteConfig:
    model_base_path: Path
    quick: bool = False
    sweep_reps: int = 3
    sweep_s: float = 4.0
    rounds: int = 3
    drain_s: float = 20.0
    window_s: float = 8.0
    latency_s: float = 60.0
    workers: int = 2
    partitions: int = 12
    cameras: int = 12
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    skip_scaling: bool = False

    @classmethod
    def make(cls, model_base_path: Path, quick: bool, skip_scaling: bool = False) -> SuiteConfig:
        if not quick:
            return cls(model_base_path, skip_scaling=skip_scaling)
        return cls(
            model_base_path,
            quick=True,
            sweep_reps=1,
            sweep_s=3.0,
            rounds=1,
            drain_s=12.0,
            window_s=4.0,
            latency_s=15.0,
            scaling=ScalingConfig(rounds=1, drain_s=6.0),
            skip_scaling=skip_scaling,
        )

    def version_dir(self) -> Path:
        versions = sorted((p for p in self.model_base_path.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        if not versions:
            raise FileNotFoundError(f"no model version under {self.model_base_path}: run `python -m model.export`")
        return versions[-1]


def windows_dict(ws: list[Window]) -> dict[str, Any]:
    return {
        "fps": Summary.of(w.fps for w in ws).as_dict(),
        "fps_per_core": Summary.of(w.fps_per_core for w in ws).as_dict(),
        "cores_used": round(Summary.of(w.cores for w in ws).median, 3),
        "faces_per_frame": round(sum(w.faces for w in ws) / sum(w.frames for w in ws), 3),
    }


def run_main(cfg: SuiteConfig, log_dir: Path) -> dict[str, Any]:
    started = time.monotonic()
    frames = frame_set(32)
    jpegs = [j for j, _ in frames]
    details: dict[str, Any] = {
        "frames": {
            "count": len(frames),
            "size": "640x480",
            "faces_drawn_per_frame": [n for _, n in frames[:4]],
            "mean_jpeg_kb": round(sum(len(j) for j in jpegs) / len(jpegs) / 1024, 1),
        }
    }
    notes: list[str] = []

    # 1. the ceiling: the exported model in process, in each runtime, runtimes and batch sizes interleaved
    logger.info("model_limit: loading %s (tensorflow and openvino)", cfg.version_dir())
    runners: dict[str, ModelRunner] = {
        TENSORFLOW: ModelRunner(cfg.version_dir()),
        OPENVINO: OpenVinoRunner(cfg.version_dir()),
    }
    # one caller, and as many concurrent callers as cores (a server answers calls concurrently)
    threads = sorted({1, os.cpu_count() or 1})
    configs = [(rt, b, t) for t in threads for b in BATCH_SIZES for rt in runners]
    sweep: dict[tuple[str, int, int], list[Window]] = {c: [] for c in configs}
    for rep in range(cfg.sweep_reps):
        order = configs[rep % len(configs) :] + configs[: rep % len(configs)]
        for rt, b, t in order:
            w = runners[rt].window(jpegs, b, cfg.sweep_s, t)
            sweep[(rt, b, t)].append(w)
            logger.info("model_limit: runtime=%s batch=%d threads=%d fps=%.2f cores=%.2f", rt, b, t, w.fps, w.cores)
    best_of = {
        rt: max((c for c in configs if c[0] == rt), key=lambda c: Summary.of(w.fps for w in sweep[c]).median)
        for rt in runners
    }
    best = best_of[DEFAULT_RUNTIME]
    logger.info("naive: loading OpenCV DNN and the Keras classifier")
    naive = NaiveRunner()

    # 2-4. pipeline rounds, each followed by a model window and a naive window
    drains: list[Drain] = []
    model_ws: list[Window] = []
    runtime_ws: dict[str, list[Window]] = {rt: [] for rt in runners}
    naive_ws: list[Window] = []
    with Children(log_dir, cwd=ROOT) as procs:
        kafka, redis_url = procs.start_broker(), procs.start_redis()
        logger.info("pipeline: starting model server and %d workers", cfg.workers)
        pipe = Pipeline(
            procs,
            cfg.model_base_path,
            jpegs,
            workers=cfg.workers,
            partitions=cfg.partitions,
            cameras=cfg.cameras,
            kafka=kafka,
            redis_url=redis_url,
            serving_args=DEPLOYED_SERVING_ARGS,
        )
        pipe.warm_up(max(48, cfg.cameras * 4))
        est = Summary.of(w.fps for w in sweep[best]).median
        for r in range(cfg.rounds):
            # at least 8 model calls per worker, so calls of 16 frames finishing in steps do not skew the rate
            d = pipe.drain(max(cfg.workers * 16 * 8, int(est * cfg.drain_s)))
            drains.append(d)
            est = d.fps
            logger.info("pipeline: round=%d fps=%.2f cores=%.2f fps_per_core=%.2f", r + 1, d.fps, d.cores, d.fps_per_core)
            # every runtime at its best, the default right after the pipeline (their ratio is the pipeline's own)
            for rt in sorted(runners, key=lambda x: x != DEFAULT_RUNTIME):
                _, b, t = best_of[rt]
                mw = runners[rt].window(jpegs, b, cfg.window_s, t)
                runtime_ws[rt].append(mw)
                logger.info("model_limit: round=%d runtime=%s batch=%d threads=%d fps=%.2f", r + 1, rt, b, t, mw.fps)
            model_ws.extend(runtime_ws[DEFAULT_RUNTIME][-1:])
            nw = naive.window(jpegs, cfg.window_s)
            naive_ws.append(nw)
            logger.info("naive: round=%d fps=%.2f cores=%.2f", r + 1, nw.fps, nw.cores)

        # 3. latency at half the saturation rate
        pipe_fps = Summary.of(d.fps for d in drains)
        rate = 0.5 * pipe_fps.median
        logger.info("latency: %.2f fps for %.0f s", rate, cfg.latency_s)
        lat = pipe.latency(rate, cfg.latency_s)
        pipe.close()
        procs.stop(pipe.server.name)

        # 5. scaling against the sleep model
        scaling: dict[str, Any] | None = None
        if not cfg.skip_scaling:
            with tempfile.TemporaryDirectory(prefix="mw-sleep-model-") as tmp:
                base = export_sleep_model(Path(tmp), cfg.scaling.sleep_ms)
                server = start_server(procs, base, "sleep-serving")
                scaling = run_scaling(procs, kafka, redis_url, server, jpegs, cfg.scaling)
                procs.stop(server.name)

    # 6. where one frame's time goes in the default runtime, and each runtime's accuracy on the validation images
    logger.info("profile: one frame's path through the %s runtime", DEFAULT_RUNTIME)
    details["profile"] = profile(cfg.version_dir(), jpegs[:8], rounds=1 if cfg.quick else 3)
    data = eval_data()
    if data is None:
        notes.append("runtime_map_delta: no validation images (set MW_EVAL_DATA to a VOC folder with images/ and annotations/)")
    else:
        logger.info("accuracy: tensorflow vs openvino on the validation images of %s", data)
        details["accuracy"] = accuracy(cfg.version_dir(), data, limit=30 if cfg.quick else 0)

    # figures
    all_model = sweep[best] + model_ws
    model_fps = Summary.of(w.fps for w in all_model)
    runtime_fps = {rt: Summary.of(w.fps for w in sweep[best_of[rt]] + runtime_ws[rt]) for rt in runners}
    # runtime speedup: the default over TensorFlow, each at its best, in the windows measured side by side
    pairs = {rt: [w for w in sweep[best_of[rt]]] + runtime_ws[rt] for rt in runners}
    speedup = paired_ratio([w.fps for w in pairs[DEFAULT_RUNTIME]], [w.fps for w in pairs[TENSORFLOW]])
    speedup_core = paired_ratio(
        [w.fps_per_core for w in pairs[DEFAULT_RUNTIME]], [w.fps_per_core for w in pairs[TENSORFLOW]]
    )
    over = paired_ratio([d.fps for d in drains], [w.fps for w in model_ws])
    over_core = paired_ratio([d.fps_per_core for d in drains], [w.fps_per_core for w in model_ws])
    speed_core = paired_ratio([d.fps_per_core for d in drains], [w.fps_per_core for w in naive_ws])
    speed_wall = paired_ratio([d.fps for d in drains], [w.fps for w in naive_ws])
    lat_ms: list[float] = lat.pop("latencies_ms")  # type: ignore[assignment]
    if lat["unmatched"] or lat["dropped_stale"]:
        notes.append(f"latency run: {lat['unmatched']} counted frames unmatched, {lat['dropped_stale']} dropped stale")

    details["model_limit"] = {
        "runtime": DEFAULT_RUNTIME,
        "best_batch": best[1],
        "best_threads": best[2],
        "fps": model_fps.as_dict(),
        "by_batch_and_threads": {f"{rt}_b{b}_t{t}": windows_dict(ws) for (rt, b, t), ws in sweep.items()},
        "at_best_in_rounds": windows_dict(model_ws),
    }
    details["runtimes"] = {
        rt: {"best_batch": best_of[rt][1], "best_threads": best_of[rt][2], "fps": runtime_fps[rt].as_dict()}
        for rt in runners
    }
    details["runtimes"]["speedup"] = {
        "wall": speedup.as_dict(3),
        "per_core": speedup_core.as_dict(3),
        "how": f"{DEFAULT_RUNTIME} / {TENSORFLOW} frames/s, each at its best batch and callers, in windows measured "
        "side by side (sweep repeats and pipeline rounds)",
    }
    details["pipeline"] = {
        "config": {
            "workers": cfg.workers,
            "partitions": cfg.partitions,
            "cameras": cfg.cameras,
            "max_poll_records": 16,
            "server": "python -m serving with batching (serving/batching.config), as `maskwatch up`, compose and k8s run it",
            "backlog_drain_s": cfg.drain_s,
            "measured_between": "15 % and 90 % of each backlog counted in Redis",
        },
        "fps": pipe_fps.as_dict(),
        "fps_per_core": Summary.of(d.fps_per_core for d in drains).as_dict(),
        "over_model": over.as_dict(3),
        "over_model_per_core": over_core.as_dict(3),
        "rounds": [d.as_dict() for d in drains],
    }
    details["latency"] = {
        **lat,
        "n": len(lat_ms),
        "p50": round(percentile(lat_ms, 50), 1),
        "p95": round(percentile(lat_ms, 95), 1),
        "p99": round(percentile(lat_ms, 99), 1),
        "max": round(max(lat_ms), 1),
        "how": "per frame: the worker's live update (published right after its Redis MULTI/EXEC) gives the write time "
        "and how many frames of each camera the batch counted; frames of a camera are counted in order",
    }
    details["naive"] = {
        **windows_dict(naive_ws),
        "how": "one process: cv2.imdecode, cv2.dnn res10 SSD on a 300x300 blob, then tf_keras predict() on each face "
        "(224x224, one call per face); faces above the same score threshold as the exported model",
    }
    details["speedup"] = {
        "per_core": speed_core.as_dict(3),
        "wall": speed_wall.as_dict(3),
        "how": "frames per busy core = frames / CPU seconds; pipeline CPU = broker + Redis + model server + workers "
        "(psutil, user+system) over the measured window; naive CPU = the benchmark process during its window "
        "(time.process_time, all threads). The feeder that sends pre-encoded frames is not counted.",
    }
    if scaling:
        details["scaling"] = scaling
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores:
        notes.append(
            f"shared machine (load average {load:.1f} on {cores} cores): wall-clock frames/s swing with the other load; "
            "the per-core figures (frames per CPU second, in details) are the steadier comparison"
        )
    details["notes"] = notes
    details["suite_seconds"] = round(time.monotonic() - started)
    figures: dict[str, Any] = {
        "model_limit_fps": round(model_fps.median, 2),
        "model_limit_fps_tensorflow": round(runtime_fps[TENSORFLOW].median, 2),
        "model_limit_fps_openvino": round(runtime_fps[OPENVINO].median, 2),
        "runtime_speedup": round(speedup.median, 2),
        "runtime_speedup_per_core": round(speedup_core.median, 2),
        "runtime_map_delta": details.get("accuracy", {}).get(DEFAULT_RUNTIME, {}).get("map_delta"),
        "pipeline_fps": round(pipe_fps.median, 2),
        "pipeline_over_model": round(over.median, 3),
        "latency_p50_ms": details["latency"]["p50"],
        "latency_p95_ms": details["latency"]["p95"],
        "latency_p99_ms": details["latency"]["p99"],
        "naive_fps": round(Summary.of(w.fps for w in naive_ws).median, 2),
        "speedup_vs_naive": round(speed_core.median, 2),
        "scaling_fps": scaling["scaling_fps"] if scaling else None,
        "scaling_efficiency_8": scaling.get("scaling_efficiency_8") if scaling else None,
        "details": details,
        "_latencies_ms": lat_ms,
    }
    return figures
