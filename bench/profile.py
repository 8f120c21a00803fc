"""py-spy sampling of a worker process, and the split of its main thread's wall time by what the loop was doing."""

from __future__ import annotations

import collections
import os
import re
import shutil
import sys
from pathlib import Path

# What the worker's main thread is doing: the first phase (in this order) with a frame (function, file) on the stack.
PHASES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("model: waiting for Predict", (("detections", "worker/inference.py"),)),
    ("model: building the request", (("submit", "worker/inference.py"),)),
    ("kafka poll / fetch / decode", (("_poll", "worker/consumer.py"), ("wait_backoff", "worker/health.py"))),
    (
        "annotate latest frame",
        (*((f, "maskwatch/annotate.py") for f in ("draw", "decode", "encode")), ("crop", "worker/snapshots.py")),
    ),
    ("redis transaction", (("commit_batch", "maskwatch/store.py"),)),
    ("live update publish", (("_publish", "worker/consumer.py"),)),
    ("kafka commit", (("_commit_kafka", "worker/consumer.py"),)),
    ("heartbeat (lag, fps)", (("heartbeat", "worker/health.py"),)),
    ("parse / validate frames", (("parse_message", "maskwatch/frames.py"), ("intake", "maskwatch/intake.py"))),
    ("counting", (("count", "worker/batch.py"),)),
)
FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    beside_python = str(Path(sys.executable).parent / "py-spy")  # the venv's, installed by the dev extras
    for cand in (os.environ.get("PY_SPY"), shutil.which("py-spy"), beside_python):
        if cand and Path(cand).exists():
            return cand
    return None


def phases_of(raw: str) -> dict[str, float]:
    """Share of the worker main thread's samples per phase, from py-spy's raw (collapsed) output.

    py-spy names a method by its qualified name (`Inference.submit`) and a file relative to sys.path.
    """
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if "run_worker" not in stack or not n.isdigit():
            continue
        total += int(n)
        frames = [m.group("func", "file") for m in (FRAME_RE.match(f.strip()) for f in stack.split(";")) if m]
        phase = next(
            (name for name, marks in PHASES if any(fn.rsplit(".", 1)[-1] == f and path.endswith(suffix) for fn, path in frames for f, suffix in marks)),
            "other",
        )
        counts[phase] += int(n)
    return {k: round(v / total, 3) for k, v in counts.most_common()} if total else {}
