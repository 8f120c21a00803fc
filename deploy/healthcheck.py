"""Container health checks: a worker's or producer's fresh heartbeat in Redis, or an HTTP endpoint answering 2xx.

Run inside the service's own image (compose `healthcheck`, Kubernetes exec probes):

    python /app/healthcheck.py worker      # this container's worker heartbeat is fresh
    python /app/healthcheck.py producer    # this container's producer heartbeat is fresh, with cameras alive
    python /app/healthcheck.py http http://127.0.0.1:5000/healthz

`--redis-down-ok` (for liveness probes) counts a Redis that cannot be reached as healthy: the heartbeat cannot
be judged then, and restarting every worker during a Redis outage would only add a restart backoff to the
recovery (the workers hold their batch and retry on their own).

Exit status 0 is healthy, 1 unhealthy (the reason on stderr). Addresses come from the same MW_* settings the
service reads, and key names from maskwatch.store, so the check never re-spells a key.

Which heartbeat is "this container's": the worker's id defaults to `<hostname>-<pid>` (MW_WORKER_ID overrides
it, the Kubernetes manifests set it to the pod name); a producer heartbeat is matched on its `host` field when
the producer writes one, else any fresh producer heartbeat counts (enough for one producer per Redis prefix).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

DEFAULT_MAX_AGE_S = 15.0


def fresh(beat: Mapping[str, str], now_ms: int, max_age_s: float) -> bool:
    """A heartbeat is fresh when its ts_ms is at most max_age_s old."""
    try:
        return now_ms - int(beat.get("ts_ms", "0")) <= max_age_s * 1000
    except ValueError:
        return False


def worker_verdict(
    beats: Mapping[str, Mapping[str, str]], hostname: str, worker_id: str | None, now_ms: int, max_age_s: float
) -> str | None:
    """None when this container's worker heartbeat is fresh, else why not."""
    if worker_id:
        mine = {k: v for k, v in beats.items() if k == worker_id}
    else:
        mine = {k: v for k, v in beats.items() if k.startswith(f"{hostname}-")}
    if not mine:
        return f"no worker heartbeat for {worker_id or hostname + '-*'} ({len(beats)} other workers)"
    if not any(fresh(b, now_ms, max_age_s) for b in mine.values()):
        return f"worker heartbeat older than {max_age_s:.0f}s"
    return None


def producer_verdict(
    beats: Mapping[str, Mapping[str, str]], hostname: str, now_ms: int, max_age_s: float
) -> str | None:
    """None when this container's producer heartbeat is fresh and, if it has cameras, one of them is alive
    (a shard with no camera is healthy: it waits for a site-file reload)."""
    tagged = {k: v for k, v in beats.items() if "host" in v}
    mine = {k: v for k, v in tagged.items() if v["host"] == hostname} if tagged else dict(beats)
    live = [b for b in mine.values() if fresh(b, now_ms, max_age_s)]
    if not live:
        return "no fresh producer heartbeat"
    if not any(b.get("alive", "1") not in ("0", "") or b.get("cameras", "1") == "0" for b in live):
        return "producer heartbeat says no camera thread is alive"
    return None


def check_heartbeat(kind: str, max_age_s: float, redis_down_ok: bool = False) -> str | None:
    import redis

    from maskwatch.settings import CommonSettings
    from maskwatch.store import Store

    settings = CommonSettings()  # a bad setting fails the check before Redis is asked anything
    worker_id = _explicit_worker_id() if kind == "worker" else None
    store = Store.from_url(settings.redis_url, settings.redis_prefix)
    try:
        beats = store.heartbeats(kind)
    except (redis.RedisError, OSError) as exc:
        if redis_down_ok:
            print(f"healthcheck: redis unreachable, not judged: {exc}", file=sys.stderr)
            return None
        return f"redis unreachable: {exc}"
    finally:
        store.close()
    now_ms = int(time.time() * 1000)
    hostname = socket.gethostname()
    if kind == "worker":
        return worker_verdict(beats, hostname, worker_id, now_ms, max_age_s)
    return producer_verdict(beats, hostname, now_ms, max_age_s)


def _explicit_worker_id() -> str | None:
    """MW_WORKER_ID when it is set (the Kubernetes pod name), read through the worker's own settings class."""
    from worker.settings import WorkerSettings

    ws = WorkerSettings()
    return ws.worker_id if "worker_id" in ws.model_fields_set else None


def check_http(url: str, timeout_s: float) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - a fixed local URL
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"unreachable: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="healthcheck", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="kind", required=True)
    for kind in ("worker", "producer"):
        p = sub.add_parser(kind)
        p.add_argument("--max-age-s", type=float, default=DEFAULT_MAX_AGE_S)
        p.add_argument("--redis-down-ok", action="store_true", help="healthy when Redis cannot be reached")
    h = sub.add_parser("http")
    h.add_argument("url")
    h.add_argument("--timeout-s", type=float, default=3.0)
    args = ap.parse_args(argv)
    if args.kind == "http":
        why = check_http(args.url, args.timeout_s)
    else:
        why = check_heartbeat(args.kind, args.max_age_s, args.redis_down_ok)
    if why is not None:
        print(f"unhealthy: {args.kind}: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
