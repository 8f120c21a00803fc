"""The one-machine stack: starts Tansu, Redis, the model server, workers, producer and dashboard as supervised children."""

from __future__ import annotations

import logging
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlparse

import psutil
import redis
from kafka.errors import KafkaError
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from maskwatch.buckets import TopicScheme
from maskwatch.intake import FrameLimits
from maskwatch.model_api import MODEL_NAME
from maskwatch.procs import (
    Child,
    Children,
    free_port,
    port_open,
    py,
    redis_answers,
    redis_command,
    serving_command,
    tansu_command,
)
from maskwatch.rotation import Janitor, run_janitor
from maskwatch.settings import CommonSettings, FrameSettings
from maskwatch.site import SiteConfig, SiteError, demo_site, load_site
from maskwatch.store import Store

logger = logging.getLogger(__name__)

# The model server's batching settings, the file deploy/ mounts into TF Serving, and the flags that turn them on
# as compose, the Kubernetes base and the image do: concurrent calls share model runs.
BATCHING_CONFIG = Path(__file__).resolve().parents[1] / "serving" / "batching.config"
BATCHING_ARGS = ("--enable_batching", "--batching_parameters_file", str(BATCHING_CONFIG))
# the OpenVINO runtime (model/ovmodel.py: 2.4x TensorFlow's frames per CPU second, the same validation mAP; README
# "A faster runtime"), and gRPC health as tensorflow_model_server offers it
SERVING_ARGS = ("--runtime", "openvino", "--enable_grpc_healthcheck_service", "true")


# Ctrl-C/SIGTERM stops the children in this order, each stage after the previous one has exited: what sends
# first (so nothing is left half-sent), then what consumes, then what they all depend on.
STOP_ORDER = ("producer", "worker", "dashboard", "serving", "redis", "broker")
STOP_BUDGET_S = 9.0  # every child has exited (or was killed) within this many seconds of the stop


def stop_stage(name: str) -> int:
    """Position of a child in STOP_ORDER (`worker-2` is a `worker`); unknown names stop first."""
    base = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name
    return STOP_ORDER.index(base) if base in STOP_ORDER else -1


def stop_children(children: Iterable[Child], budget_s: float = STOP_BUDGET_S) -> None:
    """SIGTERM stage by stage in STOP_ORDER, waiting for each stage to exit before the next; a child still
    running when its share of the budget is spent gets SIGKILL (and so a non-zero status)."""
    children = list(children)
    deadline = time.monotonic() + budget_s
    stages = sorted({stop_stage(c.name) for c in children})
    for n, stage in enumerate(stages):
        live = [c for c in children if stop_stage(c.name) == stage and c.alive()]
        for c in live:
            c.send_signal(signal.SIGTERM)
        # each later stage keeps at least half a second of the budget
        stage_deadline = max(time.monotonic() + 0.5, deadline - (len(stages) - n - 1) * 0.5)
        for c in live:
            c.finish(stage_deadline - time.monotonic())


def exit_problems(children: Iterable[Child], starting: bool = False) -> list[str]:
    """One line per child that did not exit 0 (after stop_children). `starting`: the stop came while the stack was
    starting, when a child our SIGTERM ended before it had installed its handler stopped as asked."""
    out = []
    for c in children:
        rc = c.returncode
        if rc is None or rc == 0 or (starting and rc == -signal.SIGTERM):
            continue
        how = f"was killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with status {rc}"
        out.append(f"{c.name} {how} (log: {c.log_path})")
    return out


def check_redis_for_site(store: Store, site: SiteConfig, where: str) -> None:
    """Refuse a Redis that holds another site's cameras under our key prefix (`up` never mixes sites); retire
    this site's cameras that are no longer in its site file."""
    mine = {c.id for c in site.cameras}
    gone = [cid for cid in store.camera_ids() if cid not in mine and store.camera_info(cid).get("site") == site.site]
    if gone:
        store.retire_cameras(gone)
        logger.info("cameras retired (no longer in the site file) cameras=%s", ",".join(gone))
    foreign: dict[str, list[str]] = {}
    for cid in store.camera_ids():
        other = store.camera_info(cid).get("site", "")
        if (other and other != site.site) or (not other and cid not in mine):
            foreign.setdefault(other or "?", []).append(cid)
    if foreign:
        held = "; ".join(f"site {k!r}: {', '.join(v[:5])}{' ...' if len(v) > 5 else ''}" for k, v in sorted(foreign.items()))
        raise StartError(
            f"Redis at {where} already holds cameras of another site under key prefix {store.keys.prefix!r} ({held}): "
            "give this site its own prefix (--redis-prefix / MW_REDIS_PREFIX, e.g. mw:"
            f"{site.site}:) or database (--redis-url redis://HOST:PORT/1), or retire those cameras "
            "(`maskwatch cameras remove ID`)"
        )


class StartError(Exception):
    """The stack cannot start; the message says why and which setting changes it."""

    def __init__(self, message: str, child: Child | None = None) -> None:
        super().__init__(message)
        self.child = child


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class StackSettings(CommonSettings):
    """`maskwatch up`: the shared addresses (MW_KAFKA, MW_REDIS_URL, MW_SERVING, MW_REDIS_PREFIX, ...) and the
    dashboard's port (MW_DASHBOARD_PORT); command-line flags over them."""

    model_config = SettingsConfigDict(env_prefix="MW_", extra="forbid", frozen=True, populate_by_name=True)

    dashboard_port: int = Field(
        5000, ge=1, le=65535, validation_alias="MW_DASHBOARD_PORT", description="Port of the stack's dashboard"
    )


# the settings that move each address, as an error names them
MOVED_BY = {
    "kafka": "--kafka / MW_KAFKA",
    "redis_url": "--redis-url / MW_REDIS_URL",
    "serving": "--serving / MW_SERVING",
    "dashboard_port": "--dashboard-port / MW_DASHBOARD_PORT",
}


def split_hostport(addr: str, setting: str) -> tuple[str, int]:
    """`host:port` (the first of a comma-separated list) → (host, port); a clear error naming the setting."""
    first = addr.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StartError(f"{MOVED_BY[setting]} = {addr!r} is not host:port")
    return host.strip("[]"), int(port)


def port_holder(port: int) -> str:
    """`pid 123 (redis-server)` for the process listening on a local TCP port, when this user may see it."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.Error, OSError):
        pass
    return ""


@dataclass(frozen=True)
class Service:
    """Where one dependency of the stack is: started here (`embedded`) on a local port, or used as it runs."""

    setting: str
    host: str
    port: int
    embedded: bool

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def plan_service(settings: StackSettings, setting: str, what: str) -> Service:
    """Start `what` here on the configured local port when it is free; use the one running there when the operator
    named that address (flag or MW_*); otherwise the port is taken by something else: name the setting that moves it.
    A remote address is always used as it runs."""
    addr = settings.redis_url if setting == "redis_url" else str(getattr(settings, setting))
    if setting == "redis_url":
        u = urlparse(addr)
        if u.scheme not in ("redis", "rediss") or not u.hostname:
            raise StartError(f"{MOVED_BY[setting]} = {addr.split('@')[-1]!r} is not a redis:// URL")
        host, port = u.hostname, u.port or 6379
    else:
        host, port = split_hostport(addr, setting)
    explicit = setting in settings.model_fields_set
    if host not in LOCAL_HOSTS:
        return Service(setting, host, port, embedded=False)
    if not port_open("127.0.0.1", port):
        return Service(setting, "127.0.0.1", port, embedded=True)
    if explicit:
        return Service(setting, host, port, embedded=False)
    raise StartError(
        f"port {port} is in use{port_holder(port)}: set {MOVED_BY[setting]} to a free local port for the stack's {what}, "
        f"or to that address to use the {what} running there"
    )


def reachable(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Something accepts TCP connections at host:port (any host, unlike port_open's quick local probe)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def redis_url_at(url: str, host: str, port: int) -> str:
    """`url` with its host and port replaced (database and options kept)."""
    u = urlparse(url)
    netloc = f"{u.username or ''}{':' + u.password if u.password else ''}{'@' if u.username or u.password else ''}{host}:{port}"
    return u._replace(netloc=netloc).geturl()


_TELLING = re.compile(r"error|exception|fatal|cannot|can't|refused|denied|not found|no such|invalid|bad ", re.IGNORECASE)


def failure_reason(lines: list[str]) -> str:
    """The most telling part of a failed child's log: its last line that reports an error (a traceback's last
    line, a logged ERROR, a settings error with its detail lines), else its last line."""
    lines = [ln for ln in lines if ln.strip() and not ln.strip().startswith("For further information")]
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if line.startswith(("  File ", "    ")) or not _TELLING.search(line):
            continue
        # a settings error (pydantic) names the field and the rule on the next lines
        detail = [ln.strip() for ln in lines[i + 1 : i + 3]] if "validation error" in line else []
        return ": ".join([line.strip(), *detail])
    return lines[-1].strip() if lines else "(its log is empty)"


@dataclass
class StackConfig:
    settings: StackSettings = field(default_factory=StackSettings)
    workers: int = 2
    partitions: int = 12
    model_base_path: str = f"models/{MODEL_NAME}"
    site_file: str | None = None
    demo_cameras: int = 3
    demo_fps: float = 2.0
    state_dir: str = ".maskwatch"
    start_timeout_s: float = 180.0  # longest any one component may take to get ready
    first_frame_timeout_s: float = 120.0  # after this, say why no frame is counted yet (and keep running)
    # the embedded broker keeps every record until its topic is deleted: frames go to 60 s bucket topics, created
    # 4 buckets ahead and deleted once consumed (maskwatch/rotation.py), so it holds a few minutes of frames
    topic_rotate_s: int = 60
    topic_ahead: int = 4


class Stack:
    """`maskwatch up`: everything on one machine, supervised; Ctrl-C/SIGTERM stops all children within 10 s."""

    def __init__(self, cfg: StackConfig, stop: threading.Event, out: TextIO | None = None) -> None:
        self.cfg = cfg
        self.stop = stop
        self.out = out or sys.stdout
        self.log_dir = Path(cfg.state_dir) / "logs"
        self.children = Children(self.log_dir)
        self.janitor: Janitor | None = None
        self._janitor_stop = threading.Event()
        self._janitor_thread: threading.Thread | None = None
        self.failed: Child | None = None  # a child whose exit stopped the stack
        self.t0 = time.monotonic()

    def say(self, line: str) -> None:
        """A progress line on the terminal (the logs keep the details)."""
        print(line, file=self.out, flush=True)

    def _await(self, cond: Callable[[], bool], what: str, timeout_s: float | None = None) -> bool:
        """Poll `cond` until true (True), or until stopped (False). A child that exits meanwhile, or a timeout,
        raises StartError naming the child."""
        deadline = time.monotonic() + (timeout_s or self.cfg.start_timeout_s)
        while not self.stop.is_set():
            dead = self.children.exited()
            if dead is not None:
                raise StartError(f"{dead.name} exited with status {dead.returncode} while the stack was starting", dead)
            if cond():
                return True
            if time.monotonic() > deadline:
                raise StartError(f"{what} not ready after {timeout_s or self.cfg.start_timeout_s:.0f}s")
            self.stop.wait(0.2)
        return False

    def _ready(self, name: str, detail: str) -> None:
        self.say(f"  {name:<13} {detail}  ({time.monotonic() - self.t0:.1f}s)")

    # ---- checks before any child starts -----------------------------------------------------------

    def check(self) -> tuple[SiteConfig, dict[str, Service]]:
        """Everything that can be known before starting: the model, the site file (sources included), every
        address and port. Raises StartError (or SiteError) naming what is wrong and the setting that changes it."""
        cfg = self.cfg
        model_dir = Path(cfg.model_base_path)
        if not any(p.name.isdigit() for p in model_dir.glob("*")):
            raise StartError(f"no model in {model_dir}: run `python -m model.export` (make demo does)")
        site = load_site(cfg.site_file, check_sources=True) if cfg.site_file else demo_site(cfg.demo_cameras, cfg.demo_fps)
        if not site.cameras:
            raise StartError(f"{cfg.site_file}: the site has no cameras")
        try:  # the workers' MW_MAX_FRAME_* and MW_OPEN_REGISTRATION, which the janitor judges expired frames by too
            FrameSettings()
        except ValidationError as e:
            raise StartError(f"the workers' settings: {e}") from None
        s = cfg.settings
        plan = {
            "kafka": plan_service(s, "kafka", "Kafka broker"),
            "redis_url": self._plan_redis(),
            "serving": plan_service(s, "serving", "model server"),
        }
        for svc in plan.values():
            if not svc.embedded and not reachable(svc.host, svc.port):
                raise StartError(f"nothing answers at {svc.address}: check {MOVED_BY[svc.setting]}")
        if port_open("127.0.0.1", s.dashboard_port):
            raise StartError(
                f"port {s.dashboard_port} is in use{port_holder(s.dashboard_port)}: set {MOVED_BY['dashboard_port']} "
                "to a free port for the dashboard"
            )
        ports = [(k, v.port) for k, v in plan.items() if v.embedded] + [("dashboard_port", s.dashboard_port)]
        for i, (k, port) in enumerate(ports):
            for k2, port2 in ports[i + 1 :]:
                if port == port2:
                    raise StartError(f"{MOVED_BY[k]} and {MOVED_BY[k2]} both ask for port {port}: move one")
        return site, plan

    def _plan_redis(self) -> Service:
        """Redis: the operator's when named (flag or MW_REDIS_URL); otherwise the stack starts its own, on the
        default port when free, else on a free one: it never writes its site into a Redis it did not start
        unless told to."""
        s = self.cfg.settings
        try:
            return plan_service(s, "redis_url", "Redis")
        except StartError:
            if "redis_url" in s.model_fields_set:
                raise
            return Service("redis_url", "127.0.0.1", free_port(), embedded=True)

    # ---- start-up ------------------------------------------------------------------------------

    def run(self) -> int:
        """Start, supervise until stopped, stop. 0 when every child exited 0; otherwise the terminal says which did not."""
        try:
            site, plan = self.check()
        except (StartError, SiteError) as e:
            print(f"maskwatch up: {e}", file=sys.stderr, flush=True)
            return 2
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.say(f"maskwatch up: site {site.site!r}, {len(site.cameras)} cameras; starting (logs in {self.log_dir})")
        up = False
        try:
            up = self._start_all(site, plan)
            if up:
                self._supervise()
        except StartError as e:
            self._report_failure(e)
        except (TimeoutError, OSError, redis.RedisError, KafkaError) as e:  # a dependency that never answered
            self._report_failure(StartError(f"cannot start: {e}"))
        finally:
            if self.failed is None and not up and self.stop.is_set():
                self.say("stopping (asked to)")
            self._stop_janitor()  # first: the broker waits for its clients' connections before it exits
            stop_children(self.children)
        problems = exit_problems(self.children, starting=not up)
        logger.info("stack stopped problems=%d", len(problems))
        if self.failed is not None:
            return 1
        if problems:
            print("maskwatch up: not every part stopped cleanly:\n  " + "\n  ".join(problems), file=sys.stderr, flush=True)
            return 1
        if up:
            self.say("maskwatch stopped: every part exited cleanly")
        return 0

    def _report_failure(self, e: StartError) -> None:
        child = e.child or self.failed or self.children.exited()
        self.failed = child or Child("stack", [])
        lines = [f"maskwatch up: {e}"]
        if child is not None:
            tail = child.tail()
            lines.append(f"  reason: {failure_reason(tail)}")
            lines.append(f"  last lines of {child.log_path}:")
            lines.extend(f"    {t}" for t in tail)
        print("\n".join(lines), file=sys.stderr, flush=True)

    def _start_all(self, site: SiteConfig, plan: dict[str, Service]) -> bool:
        """Start every child, printing each one's progress; True once the first frames are counted (or the wait
        for them gave up with a reason), False when stopped meanwhile. StartError when a child fails."""
        from maskwatch.topics import ensure_topics

        cfg, s = self.cfg, self.cfg.settings
        kafka, rsv, serving = plan["kafka"], plan["redis_url"], plan["serving"]
        if kafka.embedded:
            self.children.start("broker", tansu_command(kafka.port))
        if not self._await(lambda: port_open(kafka.host, kafka.port), f"the Kafka broker at {kafka.address}"):
            return False
        self._ready("broker", f"{'started' if kafka.embedded else 'using'} {kafka.address}")
        redis_url = redis_url_at(s.redis_url, rsv.host, rsv.port)
        safe_redis = redis_url.split("@")[-1]
        if rsv.embedded:
            datadir = Path(cfg.state_dir) / "redis"
            datadir.mkdir(parents=True, exist_ok=True)
            self.children.start("redis", redis_command(rsv.port, str(datadir), persist=True))
        if not self._await(lambda: redis_answers(redis_url), f"Redis at {safe_redis}"):
            return False
        store = Store.from_url(redis_url, s.redis_prefix)
        try:
            if not rsv.embedded:
                check_redis_for_site(store, site, safe_redis)
            baseline = sum(store.totals(c.id).frames for c in site.cameras)
            self._ready("redis", f"{'started' if rsv.embedded else 'using'} {safe_redis} (key prefix {s.redis_prefix})")
            if redis_url != s.redis_url:  # the configured port was taken: say how the CLI reaches this one
                self.say(f"  {'':<13} (`maskwatch stats` and `cameras`: set MW_REDIS_URL={safe_redis})")
            client = s.kafka_client_config() | {"bootstrap_servers": [kafka.address]}
            rotate_s = cfg.topic_rotate_s if kafka.embedded else 0  # Apache Kafka bounds the topic by retention
            if rotate_s:
                self._start_janitor(client, redis_url, rotate_s)
            else:
                parts = ensure_topics(client, s.topic, cfg.partitions, s.dlq_topic, stop=self.stop)
                logger.info("topic ready topic=%s partitions=%d", s.topic, parts[s.topic])
                self._ready("topics", f"{s.topic}: {parts[s.topic]} partitions")
            # every child gets the stack's addresses and names, whether they came from flags or MW_* variables
            env = {
                "MW_KAFKA": kafka.address,
                "MW_REDIS_URL": redis_url,
                "MW_SERVING": serving.address,
                "MW_REDIS_PREFIX": s.redis_prefix,
                "MW_TOPIC": s.topic,
                "MW_DLQ_TOPIC": s.dlq_topic,
                "MW_TOPIC_ROTATE_S": str(rotate_s),
            }
            if serving.embedded:
                self._start_serving(serving.port, env)
            for i in range(cfg.workers):
                self.children.start(f"worker-{i + 1}", py("worker", "--worker-id", f"worker-{i + 1}"), env)
            pargs = ["--site", cfg.site_file] if cfg.site_file else ["--demo-cameras", str(cfg.demo_cameras), "--demo-fps", str(cfg.demo_fps)]
            self.children.start("producer", py("producer", *pargs), env)
            dargs = ["--site", cfg.site_file] if cfg.site_file else []  # its time zone and alert rules
            self.children.start("dashboard", py("dashboard", "--port", str(s.dashboard_port), *dargs), env)
            self.say(f"  {'model server':<13} loading {cfg.model_base_path} ..." if serving.embedded else f"  {'model server':<13} using {serving.address}")
            if not self._await(lambda: port_open(serving.host, serving.port), f"the model server at {serving.address}"):
                return False
            self._ready("model server", f"answers on {serving.address}")
            if not self._await(lambda: len(store.heartbeats("worker")) >= cfg.workers, f"{cfg.workers} workers"):
                return False
            self._ready("workers", f"{cfg.workers} running")
            if not self._await(lambda: bool(store.heartbeats("producer")), "the producer"):
                return False
            self._ready("producer", f"{len(site.cameras)} cameras")
            if not self._await(lambda: port_open("127.0.0.1", s.dashboard_port), "the dashboard"):
                return False
            url = f"http://127.0.0.1:{s.dashboard_port}/"
            self._ready("dashboard", url)
            counted = lambda: sum(store.totals(c.id).frames for c in site.cameras) > baseline  # noqa: E731
            try:
                if not self._await(counted, "the first counted frame", cfg.first_frame_timeout_s):
                    return False
                self.say(f"MaskWatch is up: first frames counted {time.monotonic() - self.t0:.1f}s after start; dashboard {url}  (Ctrl-C stops)")
            except StartError as e:
                if e.child is not None:
                    raise
                self.say(f"MaskWatch is running, but no frame was counted in {cfg.first_frame_timeout_s:.0f}s; dashboard {url}")
                for c in site.cameras:
                    info = store.camera_info(c.id)
                    self.say(f"  camera={c.id} status={info.get('status', 'unknown')} last_error={info.get('last_error', '') or '-'}")
            return True
        finally:
            store.close()

    def _start_janitor(self, client: dict[str, Any], redis_url: str, rotate_s: int) -> None:
        """The dead-letter topic, the frames' bucket topics (current and ahead) and the janitor thread that rotates
        them. A fresh in-memory broker has no topic: offsets stored for bucket topics by an earlier run are void."""
        from maskwatch.topics import ensure_topics

        s = self.cfg.settings
        ensure_topics(client, None, self.cfg.partitions, s.dlq_topic, stop=self.stop)
        scheme = TopicScheme(s.topic, rotate_s)
        store = Store.from_url(redis_url, s.redis_prefix)
        judged = FrameSettings()  # checked before anything started (`check`)
        self.janitor = Janitor(
            client,
            scheme,
            self.cfg.partitions,
            store,
            "maskwatch-workers",
            ahead=self.cfg.topic_ahead,
            # what a worker would dead-letter of an expired bucket, the janitor does
            limits=FrameLimits.of(judged),
            dlq_topic=s.dlq_topic,
            open_registration=judged.open_registration,
        )
        self.janitor.reset()
        stats = self.janitor.tick()
        logger.info("topics ready pattern=%s live=%d rotate_s=%d", scheme.pattern, stats.live, rotate_s)
        self._ready("topics", f"{s.topic}.<time>: {rotate_s} s buckets of {self.cfg.partitions} partitions, deleted once consumed")
        self._janitor_stop = threading.Event()
        self._janitor_thread = threading.Thread(target=run_janitor, args=(self.janitor, self._janitor_stop), name="janitor", daemon=True)
        self._janitor_thread.start()

    def _stop_janitor(self) -> None:
        if self.janitor is None:
            return
        self._janitor_stop.set()
        if self._janitor_thread is not None:
            self._janitor_thread.join(timeout=15)
        self.janitor.close()
        self.janitor.store.close()

    def _start_serving(self, port: int, env: dict[str, str]) -> None:
        model_dir = Path(self.cfg.model_base_path)
        # REST beside gRPC, as tensorflow_model_server pairs them (8500 / 8501); a taken port leaves REST off
        rest = port + 1
        if port_open("127.0.0.1", rest):
            logger.warning("model server rest off: port %d in use", rest)
            rest = 0
        # on 127.0.0.1: the workers and dashboard are on this machine; nobody else may call it
        argv = serving_command(port, model_dir.resolve(), "--host", "127.0.0.1", *BATCHING_ARGS, *SERVING_ARGS, rest_port=rest)
        self.children.start("serving", argv, env)

    def _supervise(self) -> None:
        """Restart exited children with capped backoff until stopped; log the broker's memory every minute."""
        last_mem = 0.0
        broker = self.children.by_name.get("broker")
        while not self.stop.is_set():
            now = time.monotonic()
            restarted = self.children.restart_exited(now)
            if broker in restarted and self.janitor is not None:
                # a restarted in-memory broker lost its topics and frames: recreate them, void old offsets
                self.janitor.request_reset()
            if now - last_mem > 60 and broker is not None:
                last_mem = now
                try:
                    live = self.janitor.stats.live if self.janitor is not None else 0
                    logger.info("broker memory rss_mb=%.0f topics=%d", broker.rss_mb(), live)
                except psutil.Error:
                    pass
            self.stop.wait(0.5)
