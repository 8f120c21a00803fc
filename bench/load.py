"""Closed-loop gRPC load on a model server: k clients, each sending Predict calls of b frames back to back, through
the worker's own client (maskwatch.model_api.ModelClient); throughput without start/end quantisation."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from maskwatch.model_api import ModelClient


@dataclass(frozen=True)
class Load:
    clients: int
    batch: int
    fps: float
    calls: int
    wall_s: float
    mean_call_ms: float


def closed_loop(target: str, jpegs: Sequence[bytes], clients: int, batch: int, seconds: float) -> Load:
    """Each client's rate is measured between its own first and last completed call after a warm-up call, so no
    call is cut by the window; the clients' rates add up to the server's throughput."""
    stop_at = time.monotonic() + seconds
    done: list[list[tuple[float, int, float]]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def client(i: int) -> None:
        c = ModelClient(target, timeout_s=120.0)
        try:
            c.load_metadata()
            k = i * batch
            while True:
                frames = [jpegs[(k + j) % len(jpegs)] for j in range(batch)]
                k += batch
                t = time.monotonic()
                c.predict(frames)
                now = time.monotonic()
                done[i].append((now, batch, now - t))
                if now >= stop_at and len(done[i]) >= 3:
                    return
        except BaseException as e:  # noqa: BLE001 - reported to the caller below
            errors.append(e)
        finally:
            c.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    fps = 0.0
    calls = 0
    lat: list[float] = []
    for d in done:
        # the first call warms the client (and, for a new batch size, the server): rate from its end on
        first, last = d[0][0], d[-1][0]
        frames = sum(n for _, n, _ in d[1:])
        fps += frames / (last - first)
        calls += len(d) - 1
        lat += [x for _, _, x in d[1:]]
    return Load(clients, batch, fps, calls, time.monotonic() - t0, 1000 * sum(lat) / len(lat))
