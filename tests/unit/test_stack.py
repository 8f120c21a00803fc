"""`maskwatch up`'s decisions before and after its children run: addresses and ports, stop order, exit reports."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maskwatch.procs import Child, free_port
from maskwatch.stack import (
    STOP_ORDER,
    Stack,
    StackConfig,
    StackSettings,
    StartError,
    exit_problems,
    failure_reason,
    plan_service,
    redis_url_at,
    stop_children,
    stop_stage,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A local port something listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_flags_and_environment_set_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MW_KAFKA", "127.0.0.1:19092")
    monkeypatch.setenv("MW_REDIS_URL", "redis://127.0.0.1:16379/3")
    monkeypatch.setenv("MW_DASHBOARD_PORT", "15000")
    s = StackSettings(kafka="127.0.0.1:29092")  # a flag wins over the environment
    assert (s.kafka, s.redis_url, s.dashboard_port) == ("127.0.0.1:29092", "redis://127.0.0.1:16379/3", 15000)
    assert {"kafka", "redis_url", "dashboard_port"} <= s.model_fields_set


def test_a_free_local_port_gets_the_embedded_service() -> None:
    port = free_port()
    svc = plan_service(StackSettings(kafka=f"127.0.0.1:{port}"), "kafka", "Kafka broker")
    assert svc.embedded and svc.port == port


def test_a_named_address_in_use_is_used_as_it_runs(busy_port: int) -> None:
    svc = plan_service(StackSettings(serving=f"localhost:{busy_port}"), "serving", "model server")
    assert not svc.embedded and svc.address == f"localhost:{busy_port}"


def test_a_default_port_in_use_names_the_setting_that_moves_it(busy_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MW_SERVING", raising=False)
    s = StackSettings.model_construct(_fields_set=set(), serving=f"127.0.0.1:{busy_port}")  # as if it were the default
    with pytest.raises(StartError) as e:
        plan_service(s, "serving", "model server")
    assert f"port {busy_port} is in use" in str(e.value)
    assert "--serving / MW_SERVING" in str(e.value)


@pytest.mark.parametrize(
    ("setting", "value", "expect"),
    [("kafka", "nohost", "--kafka / MW_KAFKA"), ("serving", "h:99999", "MW_SERVING"), ("redis_url", "http://h:1", "redis://")],
)
def test_bad_addresses_are_named(setting: str, value: str, expect: str) -> None:
    with pytest.raises(StartError, match=expect.replace("/", ".")):
        plan_service(StackSettings(**{setting: value}), setting, "x")


def test_remote_addresses_are_never_started_here() -> None:
    svc = plan_service(StackSettings(redis_url="redis://cache.example:6380/2"), "redis_url", "Redis")
    assert not svc.embedded and (svc.host, svc.port) == ("cache.example", 6380)


def test_a_named_address_where_nothing_answers_is_refused_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "models" / "1").mkdir(parents=True)
    closed = free_port()
    # another host, as far as up knows; every other address on a free port
    settings = StackSettings(kafka=f"127.0.0.2:{closed}", serving=f"127.0.0.1:{free_port()}", dashboard_port=free_port())
    stack = Stack(StackConfig(settings=settings, model_base_path=str(tmp_path / "models"), state_dir=str(tmp_path)), threading.Event())
    with pytest.raises(StartError) as e:
        stack.check()
    assert str(e.value) == f"nothing answers at 127.0.0.2:{closed}: check --kafka / MW_KAFKA"


def test_a_bad_frame_limit_is_refused_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers' frame limits are the janitor's too: a bad one stops `up` with the setting named, not a child."""
    (tmp_path / "models" / "1").mkdir(parents=True)
    monkeypatch.setenv("MW_MAX_FRAME_BYTES", "12")
    stack = Stack(StackConfig(model_base_path=str(tmp_path / "models"), state_dir=str(tmp_path)), threading.Event())
    with pytest.raises(StartError, match="max_frame_bytes") as e:
        stack.check()
    assert "greater than or equal to 1024" in str(e.value)
    assert not stack.children.by_name

def test_redis_url_at_keeps_database_and_credentials() -> None:
    assert redis_url_at("redis://u:pw@127.0.0.1:6379/4", "127.0.0.1", 7000) == "redis://u:pw@127.0.0.1:7000/4"
    assert redis_url_at("redis://127.0.0.1:6379/0", "127.0.0.1", 7000) == "redis://127.0.0.1:7000/0"


def test_stop_order_is_producer_workers_dashboard_server_redis_broker() -> None:
    names = ["broker", "redis", "serving", "worker-1", "worker-2", "producer", "dashboard"]
    assert sorted(names, key=stop_stage) == ["producer", "worker-1", "worker-2", "dashboard", "serving", "redis", "broker"]
    assert STOP_ORDER[0] == "producer" and STOP_ORDER[-1] == "broker"


def _child(name: str, code: str, log_dir: Path) -> Child:
    c = Child(name, [sys.executable, "-c", code])
    c.start(log_dir)
    return c


def test_stop_children_stops_stage_by_stage_and_reports_who_did_not_exit_0(tmp_path: Path) -> None:
    # each child appends its name to one file when it gets SIGTERM: the file shows the order
    order = tmp_path / "order"
    on_term = (
        "import signal,sys,time\n"
        "def h(*a):\n"
        f"    open({str(order)!r},'a').write(NAME+'\\n'); sys.exit(RC)\n"
        "signal.signal(signal.SIGTERM, h)\n"
        "open(READY,'w').close()\n"
        "while True: time.sleep(0.05)\n"
    )
    children = []
    for name, rc in (("broker", 0), ("redis", 0), ("worker-1", 3), ("producer", 0)):
        ready = tmp_path / f"{name}.ready"
        code = f"NAME={name!r}; RC={rc}; READY={str(ready)!r}\n" + on_term
        children.append(_child(name, code, tmp_path))
    ignores_term = "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    ready = str(tmp_path / "dashboard.ready")
    children.append(_child("dashboard", ignores_term + f"open({ready!r},'w').close()\nwhile True: time.sleep(0.05)\n", tmp_path))
    deadline = time.monotonic() + 20
    for c in children:  # every child has its SIGTERM handler in place
        while not (tmp_path / f"{c.name}.ready").exists():
            assert time.monotonic() < deadline and c.alive(), f"{c.name} did not start"
            time.sleep(0.02)
    stop_children(children, budget_s=6.0)
    assert order.read_text().split() == ["producer", "worker-1", "redis", "broker"]
    assert all(not c.alive() for c in children)
    problems = exit_problems(children)
    assert len(problems) == 2
    assert problems[0].startswith("worker-1 exited with status 3")
    assert problems[1].startswith("dashboard was killed by SIGKILL")


def test_a_child_our_sigterm_ended_while_starting_stopped_as_asked(tmp_path: Path) -> None:
    c = Child("serving", [sys.executable, "-c", "import time; time.sleep(60)"])  # no SIGTERM handler (yet)
    c.start(tmp_path)
    stop_children([c], budget_s=5)
    assert c.proc is not None and c.proc.returncode == -15
    assert exit_problems([c], starting=True) == []
    assert exit_problems([c])[0].startswith("serving was killed by SIGTERM")


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (["loading", "Traceback (most recent call last):", '  File "x"', "OSError: no model here"], "OSError: no model here"),
        (["a", "ts=1 level=ERROR msg=\"bad\"", "bye"], "ts=1 level=ERROR msg=\"bad\""),
        (
            ["dashboard: bad configuration", "1 validation error for DashboardSettings", "MW_DASHBOARD_PORT",
             "  Input should be less than 65536", "    For further information visit https://errors.pydantic.dev"],
            "1 validation error for DashboardSettings: MW_DASHBOARD_PORT: Input should be less than 65536",
        ),
        (["error: port taken", "more"], "error: port taken"),
        (["just", "ended"], "ended"),
        ([], "(its log is empty)"),
    ],
)
def test_failure_reason_picks_the_telling_line(lines: list[str], reason: str) -> None:
    assert failure_reason(lines) == reason


def test_site_check_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("site: s\ncameras:\n  - id: a\n    source: synthetic\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"site: s\ncameras:\n  - id: a\n    source: {tmp_path}/missing.mp4\n")
    ok = subprocess.run([sys.executable, "-m", "maskwatch.cli", "site", "check", str(good)], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "ok" in ok.stdout
    no = subprocess.run([sys.executable, "-m", "maskwatch.cli", "site", "check", str(bad)], capture_output=True, text=True, timeout=30)
    assert no.returncode != 0
    assert no.stderr.strip() == f"{bad}:4: camera=a field=source: no such file: {tmp_path}/missing.mp4"


def test_free_ports_are_all_different_and_never_neighbours(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model server puts REST on its port + 1: no port handed out is another's + 1 (the CI run where `up`
    failed while the model server loaded), and none repeats (a kernel hands a just-closed port out again)."""
    from maskwatch import procs

    tried = iter([20000, 20000, 20001, 19999, 20002, 20004])

    class Rng:
        def randrange(self, lo: int, hi: int) -> int:
            return next(tried)

    monkeypatch.setattr(procs, "_handed_out", set())
    monkeypatch.setattr(procs, "_rng", Rng())
    monkeypatch.setattr(procs, "_ephemeral_start", lambda: 32768)
    assert [procs.free_port() for _ in range(3)] == [20000, 20002, 20004]


def test_free_ports_lie_below_the_range_outgoing_connections_take_theirs(monkeypatch: pytest.MonkeyPatch) -> None:
    """An outgoing connection (a worker's to the broker) takes its local port from the ephemeral range: a port
    chosen there could be gone before the child that was to listen on it binds."""
    from maskwatch import procs

    monkeypatch.setattr(procs, "_handed_out", set())
    lo = procs._ephemeral_start()
    ports = [procs.free_port() for _ in range(40)]
    assert len(set(ports) | {p + 1 for p in ports}) == 80
    if lo > 12000:
        assert all(p + 1 < lo for p in ports)
    for p in ports:  # free to listen on, and so is its REST neighbour
        for q in (p, p + 1):
            with socket.socket() as s:
                s.bind(("127.0.0.1", q))
