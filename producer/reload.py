"""`maskwatch cameras reload`: ask every running producer to re-read its site file, and report what each did.

A producer re-reads its file on SIGHUP, or when the reload counter in Redis goes up (this works
across hosts and containers, where a signal cannot be sent). Each producer answers in its
heartbeat: the request number it applied, and whether the file was valid.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from maskwatch.store import Store


@dataclass(frozen=True)
class ReloadOutcome:
    producer: str
    ok: bool | None  # None: no answer before the timeout
    message: str


def request_reload(store: Store, timeout_s: float = 10.0, poll_s: float = 0.2) -> list[ReloadOutcome]:
    """Bump the reload counter and wait (up to `timeout_s`) for every live producer to apply it."""
    waiting = set(store.heartbeats("producer"))
    gen = store.request_producer_reload()
    done: dict[str, ReloadOutcome] = {}
    deadline = time.monotonic() + timeout_s
    while waiting - set(done) and time.monotonic() < deadline:
        beats = store.heartbeats("producer")
        for pid in waiting - set(done):
            hb = beats.get(pid)
            if hb is None:
                done[pid] = ReloadOutcome(pid, None, "stopped before answering")
            elif int(hb.get("reload_gen", "0") or 0) >= gen:
                done[pid] = ReloadOutcome(pid, hb.get("reload_ok") == "1", hb.get("reload_msg", ""))
        if waiting - set(done):
            time.sleep(poll_s)
    for pid in waiting - set(done):
        done[pid] = ReloadOutcome(pid, None, f"no answer within {timeout_s:.0f}s")
    return [done[p] for p in sorted(done)]


def cameras_reload(redis_url: str, prefix: str, timeout_s: float = 10.0, out: TextIO | None = None) -> int:
    """The CLI command: prints one line per producer; 0 when every producer reloaded, 1 otherwise."""
    out = out or sys.stdout
    store = Store.from_url(redis_url, prefix)
    try:
        outcomes = request_reload(store, timeout_s)
    finally:
        store.close()
    if not outcomes:
        print("no producer is running (none has a heartbeat in Redis)", file=out)
        return 1
    for o in outcomes:
        verdict = "reloaded" if o.ok else "NOT reloaded" if o.ok is False else "did not answer"
        print(f"producer {o.producer}: {verdict}: {o.message}", file=out)
    return 0 if all(o.ok for o in outcomes) else 1
