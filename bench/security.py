"""`python -m bench.security`: what issue 32's limits buy, measured before/after in one run and printed.

- `cameras`: GET /api/cameras?window=24h at 1,000 cameras, interleaved, through the dashboard's Flask app: the
  window's hourly + minute buckets read in one pipeline and summed in Python (before), and the fewest day, hour
  and minute buckets summed by Redis in a Lua script (now).
- `bombs`: peak RSS of the dashboard and the model server while 20 header-bomb JPEGs (a few hundred bytes
  announcing WxH pixels) are uploaded to /api/predict at once, with the code of `--before` (a directory holding
  an older checkout, e.g. `git archive <rev> | tar -x -C DIR`) and with this checkout.
- `frames`: peak RSS of the model server (`python -m serving`, either runtime, its pixel cap raised to admit them)
  while N large JPEGs (a real photo scaled up, or header bombs) are sent to Predict at once, with the code and
  model of `--before` and with this checkout's: what decoding a large frame downscaled saves. With `--per-request K`
  each Predict carries K copies of the frame (`--size 640x480 -n 1 --per-request 64`: one large batch, what the
  runtime's chunking bounds).
- `rps`: requests/s of GET /api/cameras from N client threads, `python -m dashboard` of `--before` (the
  Werkzeug development server) against this checkout's (gunicorn), both as processes, interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import grpc
import numpy as np
import psutil

from maskwatch.detections import Counts
from maskwatch.frames import image_size
from maskwatch.model_api import MODEL_NAME, ModelClient
from maskwatch.payloads import CameraSummary
from maskwatch.procs import Children, free_port, port_open, py, serving_command, wait_for
from maskwatch.store import BatchWrite, Store, epoch_minute, summarise

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def children() -> Iterator[Children]:
    """Child processes logging to a temporary directory, stopped on the way out."""
    with tempfile.TemporaryDirectory() as d, Children(Path(d)) as group:
        yield group


# ---- cameras ------------------------------------------------------------------------------------------------


def seed_site(store: Store, cameras: int, now_ms: int) -> None:
    """`cameras` cameras with counts every 10 minutes over the last 24 h (minute, hour and day buckets)."""
    now = epoch_minute(now_ms)
    ids = [f"cam-{i:04d}" for i in range(cameras)]
    store.register_cameras(ids)
    for offset, chunk in enumerate(range(0, cameras, 50)):
        batch = BatchWrite()
        for cid in ids[chunk : chunk + 50]:
            for m in range(now - 1439, now + 1, 10):
                batch.add(("frames", 0), cid, m * 60_000, Counts(frames=10, faces=3, with_mask=2, without_mask=1, persons=1))
        batch.start_offsets[("frames", 0)] = offset
        batch.next_offsets[("frames", 0)] = offset + 1
        store.commit_batch(batch, "bench")


def python_summed_summaries(store: Store, minutes: int, now_ms: int | None = None) -> list[CameraSummary]:
    """The summaries as they were computed before: every camera's hourly and minute buckets (at most 25 + 30) read
    in one pipeline, their hashes summed in Python."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    now_minute = epoch_minute(now)
    start = now_minute - minutes + 1
    first_hour, before = divmod(start, 60)
    hour_now = now_minute // 60
    if first_hour == hour_now:
        raise ValueError("the before-path is reproduced for windows of more than an hour only")
    if before == 0:
        lead: list[tuple[str, int, int]] = []
        full_from = first_hour
    elif before < 60 - before:
        lead = [("minute", m, -1) for m in range(first_hour * 60, start)]
        full_from = first_hour
    else:
        lead = [("minute", m, 1) for m in range(start, (first_hour + 1) * 60)]
        full_from = first_hour + 1
    plan = lead + [("hour", h, 1) for h in range(full_from, hour_now + 1)]
    cids = store.camera_ids()
    with store.r.pipeline(transaction=False) as p:
        for cid in cids:
            p.hgetall(store.keys.camera(cid))
            p.hgetall(store.keys.totals(cid))
            for level, i, _ in plan:
                p.hgetall(store.keys.bucket(level, cid, i))
        rows = p.execute()
    out = []
    per = 2 + len(plan)
    for n, cid in enumerate(cids):
        info = {k.decode(): v.decode() for k, v in rows[n * per].items()}
        total: dict[str, int] = {}
        for (_, _, sign), row in zip(plan, rows[n * per + 2 : (n + 1) * per], strict=True):
            for k, v in row.items():
                total[k.decode()] = total.get(k.decode(), 0) + sign * int(v)
        win = Counts.from_mapping({k: max(0, v) for k, v in total.items()})
        totals = Counts.from_mapping({k.decode(): v for k, v in rows[n * per + 1].items()})
        out.append(summarise(cid, info, win, totals, minutes, now))
    return out


def bench_cameras(cameras: int, rounds: int) -> None:
    from dashboard import api
    from dashboard.app import close_app, create_app
    from dashboard.settings import DashboardSettings

    with children() as group:
        url = group.start_redis()
        store = Store.from_url(url, "bench:")
        now_ms = int(time.time() * 1000)
        t0 = time.perf_counter()
        seed_site(store, cameras, now_ms)
        print(f"seeded {cameras} cameras x 144 minutes in {time.perf_counter() - t0:.1f}s")
        app, _ = create_app(
            DashboardSettings(redis_url=url, redis_prefix="bench:", port=0), store, start_live=False
        )
        http = app.test_client()
        now_impl = api.all_summaries
        before, now = "hourly + minute buckets summed in Python (before)", "fewest buckets summed in Redis (now)"
        times: dict[str, list[float]] = {before: [], now: []}
        try:
            for _ in range(rounds):
                for label, impl in ((before, python_summed_summaries), (now, now_impl)):
                    api.all_summaries = impl  # type: ignore[assignment]
                    t = time.perf_counter()
                    r = http.get("/api/cameras?window=24h")
                    times[label].append(time.perf_counter() - t)
                    body = r.get_json()
                    assert r.status_code == 200 and len(body) == cameras, r.status_code
                    assert body[0]["window"]["frames"] >= 1400, body[0]["window"]["frames"]  # 144 minutes of 10
        finally:
            api.all_summaries = now_impl  # type: ignore[assignment]
            close_app(app)
            store.close()
    for label, ts in times.items():
        print(f"GET /api/cameras?window=24h at {cameras} cameras, {label}: " + ", ".join(f"{t:.2f}s" for t in ts)
              + f" (median {statistics.median(ts):.2f}s)")



# ---- header bombs -------------------------------------------------------------------------------------------


def header_bomb(width: int, height: int) -> bytes:
    """A real 8x8 JPEG whose start-of-frame header announces width x height."""
    raw = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    i = raw.index(b"\xff\xc0")
    return raw[: i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + raw[i + 9 :]


def multipart(raw: bytes) -> tuple[bytes, str]:
    boundary = "mwbench"
    body = io.BytesIO()
    body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="b.jpg"\r\n'.encode())
    body.write(b"Content-Type: image/jpeg\r\n\r\n" + raw + f"\r\n--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


class PeakRss:
    """Samples the RSS of some processes every 20 ms in a thread; `peak` per name."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {n: psutil.Process(p) for n, p in pids.items()}
        self.peak = {n: 0.0 for n in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> dict[str, float]:
        """RSS of each process with its children (gunicorn serves from a worker process it forks)."""
        out = {}
        for n, p in self.procs.items():
            total = 0
            for q in [p, *p.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += q.memory_info().rss
            out[n] = total / 2**20
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            for n, v in self.now().items():
                self.peak[n] = max(self.peak[n], v)
            self._stop.wait(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def bomb_run(code: Path, label: str, redis_url: str, n: int, width: int, height: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(code), "TF_CPP_MIN_LOG_LEVEL": "2", "MW_REDIS_URL": redis_url}
    env = {k: v for k, v in env.items() if not k.startswith("MW_DASHBOARD")}
    gport, dport = free_port(), free_port()
    model = ROOT / "models" / MODEL_NAME
    with children() as group:
        serving = group.start(
            "serving", serving_command(gport, model, "--file_system_poll_wait_seconds", "0"), base_env=env, cwd=code
        )
        dash = group.start(
            "dashboard",
            py("dashboard", "--port", str(dport), "--serving", f"127.0.0.1:{gport}", "--redis-prefix", "bench:"),
            base_env=env,
            cwd=code,
        )
        wait_for(lambda: port_open("127.0.0.1", gport) and port_open("127.0.0.1", dport), 300, "model server + dashboard")
        url = f"http://127.0.0.1:{dport}/api/predict"
        body, ctype = multipart(header_bomb(width, height))

        def post(_: int) -> int:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype}, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    return int(r.status)
            except urllib.error.HTTPError as e:
                return int(e.code)
            except OSError:
                return -1

        post(0)  # the model server loads TensorFlow's Predict path and the dashboard its client once
        with PeakRss({"dashboard": dash.pid, "model server": serving.pid}) as rss:
            before = rss.now()
            t = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                codes = list(pool.map(post, range(n)))
            took = time.perf_counter() - t
            time.sleep(1.0)
            after = rss.now()
        statuses = {c: codes.count(c) for c in sorted(set(codes))}
        for name in ("dashboard", "model server"):
            print(f"{label}: {name} RSS {before[name]:.0f} MB -> peak {rss.peak[name]:.0f} MB -> {after[name]:.0f} MB after"
                  f" ({n} parallel {width}x{height} header bombs, answers {statuses}, {took:.1f}s)")


def bench_bombs(before: Path | None, n: int, width: int, height: int) -> None:
    with children() as group:
        url = group.start_redis()
        if before is not None:
            bomb_run(before, f"before ({before})", url, n, width, height)
        bomb_run(ROOT, "now", url, n, width, height)


# ---- large frames at the model server -------------------------------------------------------------------------


def large_jpeg(width: int, height: int) -> bytes:
    """scikit-image's astronaut (one face) scaled up to width x height, as a JPEG (quality 90)."""
    from skimage.data import astronaut

    bgr = cv2.resize(cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR), (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def frames_run(code: Path, model: Path, label: str, runtime: str, n: int, jpeg: bytes, what: str, per_request: int = 1) -> None:
    env = {**os.environ, "PYTHONPATH": str(code), "TF_CPP_MIN_LOG_LEVEL": "2"}
    port = free_port()
    size = image_size(jpeg)
    assert size is not None
    flags = ("--runtime", runtime, "--max_image_pixels", str(size.pixels), "--file_system_poll_wait_seconds", "0")
    with children() as group:
        serving = group.start("serving", serving_command(port, model, *flags), base_env=env, cwd=code)
        client = ModelClient(f"127.0.0.1:{port}", timeout_s=300)
        try:
            wait_for(lambda: port_open("127.0.0.1", port), 300, "the model server")
            small = large_jpeg(640, 480)
            wait_for(lambda: _answers(client, small), 300, "the model")

            def predict(_: int) -> str:
                try:
                    out = client.predict([jpeg] * per_request)
                except grpc.RpcError as error:
                    return str(error.code().name)
                return f"OK {int(out['num_detections'][0])} faces"

            with PeakRss({"model server": serving.pid}) as rss:
                before = rss.now()["model server"]
                t = time.perf_counter()
                with ThreadPoolExecutor(n) as pool:
                    answers = list(pool.map(predict, range(n)))
                took = time.perf_counter() - t
        finally:
            client.close()
    counted = {a: answers.count(a) for a in sorted(set(answers))}
    print(f"{label}: model server ({runtime}) RSS {before:.0f} MB -> peak {rss.peak['model server']:.0f} MB"
          f" ({n} parallel Predicts of {per_request} {size.width}x{size.height} {what}, answers {counted}, {took:.1f}s)",
          flush=True)


def _answers(client: ModelClient, jpeg: bytes) -> bool:
    try:
        client.predict([jpeg])
    except grpc.RpcError:
        return False
    return True


def bench_frames(before: Path | None, before_model: Path | None, runtime: str, n: int, width: int, height: int,
                 bomb: bool, per_request: int = 1) -> None:
    jpeg = header_bomb(width, height) if bomb else large_jpeg(width, height)
    what = "header bombs" if bomb else "JPEGs"
    if before is not None:
        frames_run(before, before_model or before / "models" / MODEL_NAME, f"before ({before})", runtime, n,
                   jpeg, what, per_request)
    frames_run(ROOT, ROOT / "models" / MODEL_NAME, "now", runtime, n, jpeg, what, per_request)


# ---- requests per second ------------------------------------------------------------------------------------


def rps(url: str, threads: int, seconds: float) -> float:
    stop = time.monotonic() + seconds
    done = [0] * threads

    def client(i: int) -> None:
        while time.monotonic() < stop:
            with urllib.request.urlopen(url, timeout=30) as r:
                r.read()
            done[i] += 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(client, range(threads)))
    return sum(done) / seconds


def bench_rps(before: Path, cameras: int, threads: int, seconds: float, rounds: int, paths: list[str]) -> None:
    with children() as group:
        url = group.start_redis()
        store = Store.from_url(url, "bench:")
        seed_site(store, cameras, int(time.time() * 1000))
        store.close()
        ports = {"before (Werkzeug development server)": free_port(), "now (gunicorn threaded worker)": free_port()}
        env = {k: v for k, v in os.environ.items() if not k.startswith("MW_")}
        env.update({"MW_REDIS_URL": url, "MW_LOG_LEVEL": "WARNING"})
        for n, (label, port) in enumerate(ports.items()):
            code = before if label.startswith("before") else ROOT
            argv = py("dashboard", "--port", str(port), "--redis-prefix", "bench:")
            dash = group.start(f"dashboard-{n}", argv, base_env={**env, "PYTHONPATH": str(code)}, cwd=code)
            dash.wait_ready(functools.partial(port_open, "127.0.0.1", port), 60, "the dashboards")
        for path in paths:
            got: dict[str, list[float]] = {label: [] for label in ports}
            for _ in range(rounds):
                for label, port in ports.items():
                    got[label].append(rps(f"http://127.0.0.1:{port}{path}", threads, seconds))
            for label, vs in got.items():
                print(f"GET {path} ({cameras} cameras), {threads} client threads, {label}: "
                      + ", ".join(f"{v:.0f}" for v in vs) + f" req/s (median {statistics.median(vs):.0f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.security", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cameras")
    c.add_argument("--cameras", type=int, default=1000)
    c.add_argument("--rounds", type=int, default=3)
    b = sub.add_parser("bombs")
    b.add_argument("--before", type=Path, help="directory with the older code to compare with")
    b.add_argument("-n", type=int, default=20)
    b.add_argument("--size", default="6300x6300", help="the size the bombs announce")
    f = sub.add_parser("frames")
    f.add_argument("--before", type=Path, help="directory with the older code to compare with")
    f.add_argument("--before-model", type=Path, help="the model exported by the older code (default: its models/)")
    f.add_argument("--runtime", choices=("tensorflow", "openvino"), default="openvino")
    f.add_argument("-n", type=int, default=20)
    f.add_argument("--size", default="7680x4320", help="width x height of the frames")
    f.add_argument("--bomb", action="store_true", help="header bombs announcing the size instead of real frames")
    f.add_argument("--per-request", type=int, default=1, help="frames in each Predict (one batch)")
    r = sub.add_parser("rps")
    r.add_argument("--before", type=Path, required=True, help="directory with the older code to compare with")
    r.add_argument("--cameras", type=int, default=20)
    r.add_argument("--threads", type=int, default=8)
    r.add_argument("--seconds", type=float, default=5.0)
    r.add_argument("--rounds", type=int, default=3)
    r.add_argument("--path", action="append", help="paths to load (default /healthz and /api/cameras?window=15m)")
    args = ap.parse_args(argv)
    if args.what == "cameras":
        bench_cameras(args.cameras, args.rounds)
    elif args.what == "bombs":
        w, h = (int(v) for v in args.size.split("x"))
        bench_bombs(args.before, args.n, w, h)
    elif args.what == "frames":
        w, h = (int(v) for v in args.size.split("x"))
        bench_frames(args.before, args.before_model, args.runtime, args.n, w, h, args.bomb, args.per_request)
    else:
        paths = args.path or ["/healthz", "/api/cameras?window=15m"]
        bench_rps(args.before, args.cameras, args.threads, args.seconds, args.rounds, paths)
    print(json.dumps({"load_average": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
