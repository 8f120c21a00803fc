"""`maskwatch up` as a person runs it: progress and "up" on the terminal, fail fast with the reason, clean stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from maskwatch.procs import free_port, wait_for
from maskwatch.stack import STOP_ORDER, stop_stage
from tests.integration.conftest import ENV, ROOT
from tests.integration.worker_fixtures import KILL_SESSION


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in ENV.items() if not k.startswith("MW_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _addresses() -> dict[str, str]:
    """Every address on a free port, through the environment (MW_*), as an operator would set them."""
    return {
        "MW_KAFKA": f"127.0.0.1:{free_port()}",
        "MW_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MW_SERVING": f"127.0.0.1:{free_port()}",
        "MW_DASHBOARD_PORT": str(free_port()),
    }


def _up(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "up", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


class Lines:
    """A stream's lines, read in the background, waited on with a deadline."""

    def __init__(self, stream: object, beside: Lines | None = None) -> None:
        self.lines: list[str] = []
        self.beside = beside  # the other stream, shown too when a wait fails (stderr says why `up` stopped)
        self._t = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._t.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout_s: float, proc: subprocess.Popen[str]) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            hit = next((ln for ln in self.lines if re.search(pattern, ln)), None)
            if hit is not None:
                return hit
            if proc.poll() is not None and not self._t.is_alive():
                break
            time.sleep(0.2)
        seen = "\n".join(self.lines)
        if self.beside is not None:
            self.beside._t.join(2)
            seen += "\nand on the other stream:\n" + "\n".join(self.beside.lines)
        raise AssertionError(f"no line matching {pattern!r}; got:\n{seen}")

    def text(self) -> str:
        self._t.join(5)
        return "\n".join(self.lines)


@pytest.fixture
def workdir(tmp_path: Path, model_base_path: Path) -> Path:
    (tmp_path / "models").symlink_to(model_base_path.parent)
    return tmp_path


@pytest.fixture
def stopper() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:  # a failed test leaves no stack behind
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.mark.timeout(400)
def test_up_says_up_once_frames_are_counted_and_ctrl_c_stops_every_part_with_exit_0(
    workdir: Path, stopper: list[subprocess.Popen[str]]
) -> None:
    addrs = _addresses()
    proc = _up(workdir, _env(**addrs), "--workers", "1", "--demo-cameras", "1", "--redis-prefix", "site27:")
    stopper.append(proc)
    err = Lines(proc.stderr)
    out = Lines(proc.stdout, beside=err)
    out.wait_for(rf"broker\s+started {addrs['MW_KAFKA']}", 60, proc)  # MW_KAFKA honoured
    out.wait_for(rf"redis\s+started {addrs['MW_REDIS_URL']}", 60, proc)  # MW_REDIS_URL honoured
    out.wait_for(rf"model server\s+answers on {addrs['MW_SERVING']}", 240, proc)
    up = out.wait_for(r"^MaskWatch is up: first frames counted", 240, proc)
    assert f"http://127.0.0.1:{addrs['MW_DASHBOARD_PORT']}/" in up
    # every child wrote under the prefix the flag gave (the counted frame is the worker's, the row the producer's)
    r = redis.Redis.from_url(addrs["MW_REDIS_URL"])
    assert r.smembers("site27:cameras") == {b"demo-1"} and r.hget("site27:camera:demo-1", "producer")
    assert int(r.hget("site27:totals:demo-1", "frames") or 0) > 0 and not r.exists("mw:cameras")
    r.close()
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
    t0 = time.monotonic()
    rc = proc.wait(30)
    stopped_in = time.monotonic() - t0
    assert rc == 0, err.text()
    assert stopped_in < 12
    assert "every part exited cleanly" in out.text()
    assert "Traceback" not in err.text()
    log = (workdir / ".maskwatch" / "logs" / "stack.log").read_text()
    stopped = re.findall(r"stopped child=(\S+) rc=(-?\d+)", log)
    assert {rc for _, rc in stopped} == {"0"}, stopped
    names = [n for n, _ in stopped]
    assert set(names) == {"broker", "redis", "serving", "worker-1", "producer", "dashboard"}
    assert [stop_stage(n) for n in names] == sorted(stop_stage(n) for n in names), names
    assert names[0] == STOP_ORDER[0] and names[-1] == STOP_ORDER[-1]
    for child in ("worker-1", "producer"):
        assert "Traceback" not in (workdir / ".maskwatch" / "logs" / f"{child}.log").read_text()


@pytest.mark.timeout(600)
def test_a_dead_broker_or_worker_is_restarted_and_counting_goes_on(workdir: Path, stopper: list[subprocess.Popen[str]]) -> None:
    """SIGKILL the embedded broker, then a worker: the stack logs why and restarts each, the janitor recreates the
    broker's bucket topics, and frames are counted again; Ctrl-C still stops every part with exit 0."""
    addrs = _addresses()
    proc = _up(workdir, _env(**addrs, **KILL_SESSION), "--workers", "1", "--demo-cameras", "1", "--redis-prefix", "t27r:")
    stopper.append(proc)
    err = Lines(proc.stderr)
    out = Lines(proc.stdout, beside=err)
    out.wait_for(r"^MaskWatch is up: first frames counted", 300, proc)
    r = redis.Redis.from_url(addrs["MW_REDIS_URL"])
    log_path = workdir / ".maskwatch" / "logs" / "stack.log"

    def frames() -> int:
        return int(r.hget("t27r:totals:demo-1", "frames") or 0)

    def starts(child: str) -> list[int]:
        return [int(p) for p in re.findall(rf"started child={child} pid=(\d+)", log_path.read_text())]

    for child in ("broker", "worker-1"):
        pids = starts(child)
        before = len(pids)
        os.kill(pids[-1], signal.SIGKILL)
        wait_for(lambda c=child, n=before: len(starts(c)) > n, 90, f"{child} restarted")
        counted = frames()
        # within a rebalance or two: a group formed before the restarted broker's topics were back once stalled
        # counting for ~2 minutes (until the janitor's next step)
        wait_for(lambda n=counted: frames() >= n + 5, 90, f"frames counted after {child} restarted", interval_s=0.5)
    log = log_path.read_text()
    assert re.search(r"child exited child=broker rc=-9 restart_in_s=\d+", log), log[-3000:]
    assert re.search(r"child exited child=worker-1 rc=-9 restart_in_s=\d+", log), log[-3000:]
    r.close()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(30) == 0, err.text()
    assert "Traceback" not in err.text()


@pytest.mark.timeout(200)
def test_ctrl_c_while_the_model_loads_stops_every_part_with_exit_0(workdir: Path, stopper: list[subprocess.Popen[str]]) -> None:
    proc = _up(workdir, _env(**_addresses()), "--workers", "1", "--demo-cameras", "1")
    stopper.append(proc)
    err = Lines(proc.stderr)
    out = Lines(proc.stdout, beside=err)
    serving_log = workdir / ".maskwatch" / "logs" / "serving.log"
    out.wait_for(r"model server\s+loading", 60, proc)
    deadline = time.monotonic() + 120
    while "version loading" not in (serving_log.read_text() if serving_log.exists() else ""):
        assert time.monotonic() < deadline and proc.poll() is None, out.text() + err.text()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    t0 = time.monotonic()
    assert proc.wait(30) == 0, err.text()
    assert time.monotonic() - t0 < 12
    assert "stopping (asked to)" in out.text() and "MaskWatch is up" not in out.text()
    # the OpenVINO runtime can finish loading between the log line and the signal: either way it stopped cleanly
    log = serving_log.read_text()
    assert "shutdown requested while loading" in log or "server stopped" in log, log[-2000:]


@pytest.mark.timeout(60)
def test_a_bad_site_file_is_reported_on_the_terminal_before_anything_starts(workdir: Path) -> None:
    site = workdir / "site.yaml"
    site.write_text("site: s\ncameras:\n  - id: gate-a\n    source: synthetic\n    fps: 500\n")
    out = subprocess.run(
        [sys.executable, "-m", "maskwatch.cli", "up", "--site", str(site)],
        cwd=workdir, env=_env(**_addresses()), capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert f"{site}:5: camera=gate-a field=fps" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (workdir / ".maskwatch" / "logs" / "broker.log").exists()


@pytest.mark.timeout(60)
def test_a_port_in_use_is_named_with_the_setting_that_moves_it(workdir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "maskwatch.cli", "up"],
            cwd=workdir, env=_env(**{**_addresses(), "MW_DASHBOARD_PORT": str(busy)}), capture_output=True, text=True, timeout=60,
        )
    assert out.returncode == 2
    assert f"port {busy} is in use" in out.stderr and "MW_DASHBOARD_PORT" in out.stderr
    assert not (workdir / ".maskwatch" / "logs" / "broker.log").exists()


@pytest.mark.timeout(300)
def test_a_child_that_fails_while_starting_stops_the_stack_with_its_reason(
    workdir: Path, stopper: list[subprocess.Popen[str]]
) -> None:
    # the dashboard refuses this setting and exits at once: the stack stops everything and says why
    env = _env(**_addresses(), MW_DASHBOARD_WINDOW_MINUTES="0")
    proc = _up(workdir, env, "--workers", "1", "--demo-cameras", "1")
    stopper.append(proc)
    err = Lines(proc.stderr)
    out = Lines(proc.stdout, beside=err)
    rc = proc.wait(240)
    assert rc == 1, out.text() + err.text()
    text = err.text()
    assert "maskwatch up: dashboard exited with status" in text
    reason = next(ln for ln in text.splitlines() if ln.strip().startswith("reason:"))
    assert "MW_DASHBOARD_WINDOW_MINUTES" in reason and "greater than or equal to 1" in reason
    assert "MaskWatch is up" not in out.text()
    log = (workdir / ".maskwatch" / "logs" / "stack.log").read_text()
    assert "stopped child=broker rc=0" in log
