"""Writes results: latest.json (the figures, merged with the last soak or main run), latest.md (the table), and
small PNG charts; also the machine and commit they were measured on."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
MAIN_KEYS = (
    "model_limit_fps",
    "model_limit_fps_tensorflow",
    "model_limit_fps_openvino",
    "runtime_speedup",
    "runtime_speedup_per_core",
    "runtime_map_delta",
    "pipeline_fps",
    "pipeline_over_model",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "naive_fps",
    "speedup_vs_naive",
    "scaling_fps",
    "scaling_efficiency_8",
)
SOAK_KEYS = (
    "soak_rss_growth_pct",
    "soak_rss_peak_growth_pct",
    "soak_redis_other_growth_kib",
    "soak_frames_lost",
    "soak_frames_double_counted",
    "soak_rotations",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def stamp() -> dict[str, Any]:
    g = git_commit()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": g["commit"],
        "git_dirty": g["dirty"],
        "machine": machine(),
    }


def merge(previous: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...], section: str) -> dict[str, Any]:
    """New figures of one kind (main or soak) over the previous file, keeping the other kind's figures and stamp."""
    out = {k: v for k, v in previous.items() if k not in keys and k not in ("details",)}
    details = dict(previous.get("details", {}))
    for k in keys:
        out[k] = new.get(k)
    details.update(new.get("details", {}))
    out["details"] = details
    out.setdefault("runs", {})
    out["runs"] = {**previous.get("runs", {}), section: new["stamp"]}
    for k in ("date", "git_commit", "git_dirty", "machine"):
        out[k] = new["stamp"][k]
    for k in (*MAIN_KEYS, *SOAK_KEYS):
        out.setdefault(k, None)
    return out


def thin(rows: list[Any], at_most: int) -> list[Any]:
    """Every k-th row, the last one included, so that at most about `at_most` remain."""
    if len(rows) <= at_most:
        return rows
    step = -(-len(rows) // at_most)
    kept = rows[::step]
    return kept if kept[-1] is rows[-1] else [*kept, rows[-1]]


def load_previous(path: Path) -> dict[str, Any]:
    if path.exists():
        try:
            data = json.loads(path.read_text())
            return data if isinstance(data, dict) else {}
        except json.JSONDecodeError:
            return {}
    return {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = {k: data[k] for k in ("date", "git_commit", "git_dirty", "machine", *MAIN_KEYS, *SOAK_KEYS) if k in data}
    ordered.update({k: v for k, v in data.items() if k not in ordered})
    path.write_text(json.dumps(ordered, indent=2, sort_keys=False) + "\n")


def fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, list):
        return ", ".join(fmt(x, 1) for x in v)
    return str(v)


def spread(d: dict[str, Any] | None) -> str:
    if not d or "low" not in d:
        return ""
    return f"{fmt(d['low'], 1)}–{fmt(d['high'], 1)} ({len(d['runs'])} runs)"


def markdown(data: dict[str, Any]) -> str:
    det = data.get("details", {})
    m = data.get("machine", {})
    runs = data.get("runs", {})
    lines = [
        "# MaskWatch benchmark — latest",
        "",
        f"Machine: {m.get('cores')} cores, {m.get('cpu_model')}, {m.get('memory_gb')} GB; load average at the end "
        f"{m.get('load_avg')}. Each figure is the median of repeated runs (range and run count beside it); every "
        "ratio is taken between figures measured side by side in the same invocation.",
        "",
    ]
    for section, st in runs.items():
        lines.append(f"- `{section}` run: {st.get('date')} at commit `{str(st.get('git_commit'))[:12]}`"
                     f"{' (working tree modified)' if st.get('git_dirty') else ''}{' — quick' if st.get('quick') else ''}")
    lines += ["", "| figure | value | spread / notes |", "|---|---|---|"]
    ml, pl, nv, lat, sc, sk = (det.get(k, {}) for k in ("model_limit", "pipeline", "naive", "latency", "scaling", "soak"))
    acc = det.get("accuracy", {})
    rows = [
        ("model_limit_fps", f"the runtime `maskwatch up` runs ({ml.get('runtime', 'tensorflow')}) in process, best of batch 1/4/8/16 × 1 or {m.get('cores')} concurrent callers: batch {ml.get('best_batch')} × {ml.get('best_threads')}", spread(ml.get("fps"))),
        ("model_limit_fps_tensorflow", "the SavedModel in TensorFlow, at its best batch × callers", spread(det.get("runtimes", {}).get("tensorflow", {}).get("fps"))),
        ("model_limit_fps_openvino", "the OpenVINO runtime (model/ovmodel.py), at its best batch × callers", spread(det.get("runtimes", {}).get("openvino", {}).get("fps"))),
        ("runtime_speedup", "openvino / tensorflow frames/s, side by side", spread(det.get("runtimes", {}).get("speedup", {}).get("wall"))),
        ("runtime_speedup_per_core", "the same per busy core", spread(det.get("runtimes", {}).get("speedup", {}).get("per_core"))),
        ("runtime_map_delta", f"openvino mAP − tensorflow mAP on {acc.get('images', '—')} validation images", accuracy_note(acc)),
        ("pipeline_fps", f"{pl.get('config', {}).get('workers')} workers, saturated", spread(pl.get("fps"))),
        ("pipeline_over_model", "pipeline / model_limit, paired rounds", spread(pl.get("over_model"))),
        ("latency_p50_ms", f"at {fmt(lat.get('rate_fps'), 1)} fps (50 % of saturation), {lat.get('seconds')} s", ""),
        ("latency_p95_ms", "", ""),
        ("latency_p99_ms", "", f"{lat.get('n', '')} frames, unmatched {lat.get('unmatched', '')}"),
        ("naive_fps", "OpenCV DNN + Keras predict() per face, one process", spread(nv.get("fps"))),
        ("speedup_vs_naive", "fps per busy core, pipeline / naive", spread(det.get("speedup", {}).get("per_core"))),
        ("scaling_fps", f"1/2/4/8 workers, sleep model {sc.get('config', {}).get('sleep_ms_per_call')} ms/call", ""),
        ("scaling_efficiency_8", "fps(8) / (8 × fps(1))", ""),
        ("soak_rss_growth_pct", "max over every process (broker and Redis included), from the 10th minute to the end", f"{sk.get('config', {}).get('minutes', '')} min"),
        ("soak_rss_peak_growth_pct", "max over every process but Redis (it keeps days of history): its highest RSS in the last 5-min window over the first after the 10th minute", ""),
        ("soak_redis_other_growth_kib", "Redis: KiB gained after the 10th minute by every kind of key but the history's (minute/hour/day buckets, episodes, snapshots) and each camera's newest frame", ""),
        ("soak_frames_lost", "frames handed to the broker (producer `seq`) − (frames + dropped_stale + invalid + lost), when > 0", ""),
        ("soak_frames_double_counted", "the same difference when < 0: frames counted twice", ""),
        ("soak_rotations", "bucket topics deleted once consumed", ""),
    ]
    for key, what, note in rows:
        lines.append(f"| `{key}` | **{fmt(data.get(key), 4 if key.endswith('map_delta') else 2)}** | {what}{'; ' if what and note else ''}{note} |")
    prof = det.get("profile")
    if prof:
        lines += ["", f"## Where one frame's time goes (openvino runtime, batch 1, {prof.get('faces_per_frame')} faces per frame, CPU ms)", "", "| step | ms per frame | share |", "|---|---|---|"]
        for step, ms in prof.get("ms_per_frame", {}).items():
            lines.append(f"| {step} | {ms:.2f} | {100 * prof.get('share', {}).get(step, 0):.0f} % |")
    lines += ["", "## Goals", ""]
    for g in det.get("goals", []):
        lines.append(f"- {'met' if g['met'] else '**missed**'}: {g['what']} — {g['value']}")
    notes = det.get("notes", [])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += ["", "Details (per-round figures, CPU shares, configuration) are in `latest.json` under `details`.", ""]
    return "\n".join(lines)


def accuracy_note(acc: dict[str, Any]) -> str:
    """Faces found and row-for-row parity of the OpenVINO runtime against TensorFlow."""
    a = acc.get("openvino")
    if not a:
        return "no validation images"
    p = a.get("parity", {})
    return (
        f"faces found {a.get('faces_found_delta_pct')} %, rows past tolerance {p.get('unmatched', 0) + p.get('extra', 0)} "
        f"boxes / {p.get('score_differs')} scores / {p.get('class_differs')} classes of {p.get('rows')}"
    )


def chart_latency(lat_ms: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.stats import percentile

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    ax.hist(lat_ms, bins=40, color="#4c72b0")
    for q, c in ((50, "#2ca02c"), (95, "#ff7f0e"), (99, "#d62728")):
        v = percentile(lat_ms, q)
        ax.axvline(v, color=c, lw=1.2, label=f"p{q} {v:.0f} ms")
    ax.set_xlabel("capture → counted in Redis (ms)")
    ax.set_ylabel("frames")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def chart_scaling(counts: list[int], fps: list[float], ideal: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    ax.plot(counts, [fps[0] * n for n in counts], "--", color="#999999", label="linear from 1 worker")
    ax.plot(counts, ideal, ":", color="#2ca02c", label="model sleep bound")
    ax.plot(counts, fps, "o-", color="#4c72b0", label="measured")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("workers")
    ax.set_ylabel("frames/s")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def chart_soak(samples: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6, 5), dpi=90, sharex=True)
    t = [s["t_s"] / 60 for s in samples]
    for p in samples[0]["rss_mb"]:
        ax.plot(t, [s["rss_mb"][p] for s in samples], label=p)
    if "redis_used_mb" in samples[0]:
        ax.plot(t, [s["redis_used_mb"] for s in samples], "--", label="redis used_memory")
    ax.set_ylabel("RSS (MB)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=3)
    ax2.plot(t, [s["lag"] for s in samples], label="consumer lag (records)")
    ax2.plot(t, [max(0, s["sent"] - s["accounted"]) for s in samples], label="sent − accounted")
    ax2.set_xlabel("minutes")
    ax2.set_ylabel("frames")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
