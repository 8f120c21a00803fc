"""docker-compose.yml: valid for Compose itself (`docker-compose config -q`, no Docker engine needed), and
shaped for production: health-gated start order, a scalable worker, persistent volumes, pinned images,
limits, and env defaults documented in deploy/env.example. Also runs the model-AVAILABLE probe (compose
health check and Kubernetes readiness) against a stand-in for TF Serving's REST status endpoint."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy_fixtures import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    batching,
    compose,
    compose_config,
    largest_batches_mb,
    mounts,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = COMPOSE_FILE
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ONE_SHOTS = {"kafka-init", "model-export"}
# What compose cannot default: it refuses to start without them.
REQUIRED = {"MW_REDIS_PASSWORD": "a-redis-password", "MW_DASHBOARD_TOKEN": "a-dashboard-token"}


@pytest.fixture(scope="module")
def no_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An env file with only the required secrets: every other variable takes docker-compose.yml's default."""
    path = tmp_path_factory.mktemp("compose") / "secrets-only.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in REQUIRED.items()))
    return path


@pytest.fixture(scope="module")
def resolved(no_env: Path) -> dict[str, Any]:
    """`compose config`: the file as Compose understands it, variables resolved to their defaults."""
    return compose_config(no_env)


@pytest.fixture(scope="module")
def services(resolved: dict[str, Any]) -> dict[str, Any]:
    return dict(resolved["services"])


def seconds(duration: str | int) -> float:
    """A Compose duration ("1m30s", "45s", 45) in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", duration)
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    assert parts and "".join(a + b for a, b in parts) == duration, duration
    return sum(float(a) * scale[b] for a, b in parts)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("example", [False, True], ids=["defaults", "env.example"])
def test_compose_accepts_the_file(no_env: Path, example: bool) -> None:
    out = compose(ENV_EXAMPLE if example else no_env, "config", "-q")
    assert out.returncode == 0, out.stderr


@pytest.mark.timeout(60)
def test_every_long_running_service_has_a_healthcheck_restart_policy_and_limits(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if name in ONE_SHOTS:
            assert svc.get("restart") == "no", f"{name} is a one-shot"
            continue
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), name
        test = svc.get("healthcheck", {}).get("test")
        assert test and test != ["NONE"] and not svc["healthcheck"].get("disable"), f"{name}: no healthcheck"
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        assert {"cpus", "memory"} <= set(limits), f"{name}: resource limits"
        assert "stop_grace_period" in svc, name


@pytest.mark.timeout(60)
def test_start_order_waits_on_health_and_on_one_shots_finishing(services: dict[str, Any]) -> None:
    depended = set()
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, how in deps.items():
            depended.add(dep)
            want = "service_completed_successfully" if dep in ONE_SHOTS else "service_healthy"
            assert how.get("condition") == want, f"{name} -> {dep}"
            if dep not in ONE_SHOTS:
                assert services[dep].get("healthcheck", {}).get("test"), f"{dep} is waited on but has no healthcheck"
    assert {"kafka", "kafka-init", "redis", "tf-serving", "model-export"} <= depended


@pytest.mark.timeout(60)
def test_worker_scales_and_drains(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "replicas" not in worker.get("deploy", {}), "`--scale worker=N` sets the count"
    assert seconds(worker["stop_grace_period"]) > 30, "the worker drains for up to 30 s"
    assert not [n for n, s in services.items() if "container_name" in s], "container_name blocks --scale"


@pytest.mark.timeout(60)
def test_state_lives_in_named_volumes(resolved: dict[str, Any], services: dict[str, Any]) -> None:
    assert {"redis-data", "models", "kafka-data"} <= set(resolved["volumes"])

    assert mounts(services["redis"])["/data"][0] == "redis-data"
    assert mounts(services["kafka"])["/var/lib/kafka/data"][0] == "kafka-data"
    assert mounts(services["model-export"])["/models"] == ("models", False)
    assert mounts(services["tf-serving"])["/models"] == ("models", True)
    cmd = services["redis"]["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"


@pytest.mark.timeout(60)
def test_every_image_is_pinned(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        image = svc["image"]
        ref, _, digest = image.partition("@")
        tag = ref.rpartition(":")[2] if ":" in ref.rpartition("/")[2] else ""
        assert digest or (tag and tag != "latest" and re.search(r"\d", tag)), f"{name}: {image} is not pinned"
        if "build" in svc:
            stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", DOCKERFILE.read_text(), re.M | re.I)
            assert Path(svc["build"]["context"]) == ROOT and svc["build"]["dockerfile"] == "deploy/Dockerfile"
            assert svc["build"]["target"] in stages, f"{name}: no stage {svc['build']['target']}"


@pytest.mark.timeout(60)
def test_tf_serving_reads_the_serving_configs(services: dict[str, Any]) -> None:
    svc = services["tf-serving"]
    assert svc["image"].startswith("tensorflow/serving:")
    cmd = svc["command"]
    assert "--model_config_file=/config/models.config" in cmd
    assert "--enable_batching" in cmd and "--batching_parameters_file=/config/batching.config" in cmd
    binds = {target: src for target, (src, _) in mounts(svc).items()}
    for target, path in (("/config/models.config", "serving/models.config"), ("/config/batching.config", "deploy/batching.config")):
        assert Path(binds[target]) == ROOT / path
        assert (ROOT / path).is_file(), f"{path} is mounted but missing"
    assert 'base_path: "/models/mask_detector"' in (ROOT / "serving" / "models.config").read_text()
    assert services["worker"]["environment"]["MW_SERVING"] == "tf-serving:8500"


@pytest.mark.timeout(60)
def test_kafka_runs_kraft_with_compose_and_host_listeners(services: dict[str, Any]) -> None:
    env = services["kafka"]["environment"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not [k for k in env if "ZOOKEEPER" in k]
    advertised = dict(x.split("://") for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["INTERNAL"] == "kafka:9092" and advertised["EXTERNAL"].endswith(":9094")
    assert services["worker"]["environment"]["MW_KAFKA"] == advertised["INTERNAL"]
    init = services["kafka-init"]
    script = next(src for src, _ in mounts(init).values() if src.endswith("create-topics.sh"))
    assert Path(script).is_file()
    assert init["environment"]["MW_PARTITIONS"] == "12"


@pytest.mark.timeout(60)
def test_compose_refuses_to_start_without_the_redis_password_and_the_dashboard_token(tmp_path: Path) -> None:
    for missing in REQUIRED:
        env = tmp_path / f"without-{missing}.env"
        env.write_text("".join(f"{k}={v}\n" for k, v in REQUIRED.items() if k != missing))
        out = compose(env, "config", "-q")
        assert out.returncode != 0 and missing in out.stderr, (missing, out.stderr)


@pytest.mark.timeout(60)
def test_published_ports_are_on_loopback_unless_env_says_otherwise(services: dict[str, Any]) -> None:
    published = {
        name: port for name, svc in services.items() for port in svc.get("ports", [])
    }
    assert set(published) == {"dashboard", "kafka"}, published
    for name, port in published.items():
        host_ip = port["host_ip"] if isinstance(port, dict) else str(port).split(":")[0]
        assert host_ip == "127.0.0.1", f"{name}: published on {port}"


@pytest.mark.timeout(60)
def test_env_example_documents_exactly_the_variables_compose_reads() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    documented = {
        line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z0-9_]+=", line)
    }
    documented.discard("COMPOSE_PROJECT_NAME")  # read by compose itself
    assert used - documented == set(), "add these to deploy/env.example"
    assert documented - used == set(), "deploy/env.example documents variables compose never reads"


# ---- the model-AVAILABLE probe ------------------------------------------------------------------------------


class _Status(http.server.BaseHTTPRequestHandler):
    state = "AVAILABLE"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path != "/v1/models/mask_detector":
            self.send_error(404)
            return
        body = json.dumps(
            {
                "model_version_status": [
                    {"version": "1", "state": self.state, "status": {"error_code": "OK", "error_message": ""}}
                ]
            },
            indent=1,
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[tuple[int, type[_Status]]]:
    handler = type("Status", (_Status,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def probe_scripts(services: dict[str, Any]) -> dict[str, str]:
    """The bash scripts of compose's tf-serving health check and the Kubernetes readiness probe."""
    k8s = [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "base" / "tf-serving.yaml").read_text()) if d]
    deployment = next(d for d in k8s if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {
        "compose": services["tf-serving"]["healthcheck"]["test"][-1],
        "k8s": container["readinessProbe"]["exec"]["command"][-1],
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "state, healthy", [("AVAILABLE", True), ("LOADING", False), ("UNLOADING", False), ("END", False)]
)
def test_model_available_probe(
    services: dict[str, Any], status_server: tuple[int, type[_Status]], state: str, healthy: bool
) -> None:
    port, handler = status_server
    handler.state = state
    scripts = probe_scripts(services)
    assert scripts["compose"] == scripts["k8s"]
    script = scripts["compose"].replace("/dev/tcp/127.0.0.1/8501", f"/dev/tcp/127.0.0.1/{port}")
    assert script != scripts["compose"]
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=20, check=False)
    assert (out.returncode == 0) is healthy, out.stderr


@pytest.mark.timeout(60)
def test_model_available_probe_fails_when_nothing_listens(services: dict[str, Any]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = probe_scripts(services)["compose"].replace("/dev/tcp/127.0.0.1/8501", f"/dev/tcp/127.0.0.1/{port}")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=20, check=False)
    assert out.returncode != 0


@pytest.mark.timeout(60)
def test_model_server_threads_match_its_cpu_limit(services: dict[str, Any]) -> None:
    """Batches run at once, TensorFlow's thread pools and the CPU limit agree (compose and the k8s image)."""
    svc = services["tf-serving"]
    cpus = float(svc["deploy"]["resources"]["limits"]["cpus"])
    flags = dict(a.removeprefix("--").split("=", 1) for a in svc["command"] if "=" in a)
    deploy_cfg = batching(ROOT / "deploy" / "batching.config")
    assert cpus == deploy_cfg["num_batch_threads"] == int(flags["tensorflow_intra_op_parallelism"]) == int(
        flags["tensorflow_inter_op_parallelism"]
    )
    demo_cfg = batching(ROOT / "serving" / "batching.config")
    assert {**demo_cfg, "num_batch_threads": deploy_cfg["num_batch_threads"]} == deploy_cfg, "only the thread count differs"


@pytest.mark.timeout(60)
def test_model_server_memory_limit_holds_its_largest_batches(services: dict[str, Any]) -> None:
    """Every batch thread running a batch of max_batch_size frames fits the container (a batch of 256, the limit
    until 2026-12-07, needed 5 GB in a 4 GB container); a worker's default poll is one batch."""
    svc = services["tf-serving"]
    limit_mb = _bytes(svc["deploy"]["resources"]["limits"]["memory"]) / 2**20
    cfg = batching(ROOT / "deploy" / "batching.config")
    assert largest_batches_mb(cfg) <= limit_mb
    assert int(services["worker"]["environment"]["MW_MAX_POLL_RECORDS"]) <= cfg["max_batch_size"]


def _bytes(size: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?", size.strip().lower())
    assert m, size
    return float(m[1]) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m[2]]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("example", [False, True], ids=["defaults", "env.example"])
def test_redis_memory_limit_is_at_least_twice_maxmemory(no_env: Path, example: bool) -> None:
    """An AOF rewrite forks Redis: copy-on-write can double its resident memory before the limit kills it."""
    redis = compose_config(ENV_EXAMPLE if example else no_env)["services"]["redis"]
    cmd = redis["command"]
    maxmemory = _bytes(cmd[cmd.index("--maxmemory") + 1])
    assert _bytes(str(redis["deploy"]["resources"]["limits"]["memory"])) >= 2 * maxmemory


# ---- deploy/model-export.sh: the model follows the image -----------------------------------------------------

FAKE_EXPORT = r"""#!/bin/sh
# stands in for `python -m model.export --out DIR --version N`
echo "export $*" >> "$FAKE_CALLS"
out=$2 version=$4
mkdir -p "$out/mask_detector/$version" && echo model > "$out/mask_detector/$version/saved_model.pb"
"""


def run_model_export(tmp: Path, source: Path) -> subprocess.CompletedProcess[str]:
    fake = tmp / "fake-export"
    fake.write_text(FAKE_EXPORT)
    fake.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "MODEL_SOURCE": str(source),
        "MODELS": str(tmp / "models"),
        "MODEL_EXPORT": str(fake),
        "FAKE_CALLS": str(tmp / "calls"),
    }
    script = ROOT / "deploy" / "model-export.sh"
    return subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.timeout(60)
def test_model_export_refreshes_the_volume_when_the_images_model_changes(tmp_path: Path) -> None:
    source = tmp_path / "serving"
    (source / "weights").mkdir(parents=True)
    (source / "weights" / "manifest.json").write_text('{"files": {"a": "1"}}')
    versions = tmp_path / "models" / "mask_detector"

    def listing() -> list[str]:
        return sorted((p.name for p in versions.iterdir() if p.name.isdigit()), key=int)

    assert run_model_export(tmp_path, source).returncode == 0
    assert listing() == ["1"]
    again = run_model_export(tmp_path, source)
    assert again.returncode == 0 and "is this image's model" in again.stdout
    assert len((tmp_path / "calls").read_text().splitlines()) == 1, "an unchanged image exports nothing"
    (source / "weights" / "manifest.json").write_text('{"files": {"a": "2"}}')  # new weights in a new image
    assert run_model_export(tmp_path, source).returncode == 0
    assert listing() == ["1", "2"]
    (source / "graph.py").write_text("# new export code\n")
    assert run_model_export(tmp_path, source).returncode == 0
    assert listing() == ["2", "3"], "the two newest versions are kept"
    assert (versions / "3" / "source.sha256").read_text().strip() != (versions / "2" / "source.sha256").read_text().strip()


@pytest.mark.timeout(60)
def test_model_export_script_passes_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed: `apt-get install shellcheck` (.ci/run installs it)")
    out = subprocess.run(
        ["shellcheck", str(ROOT / "deploy" / "model-export.sh")], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stdout


@pytest.mark.timeout(60)
def test_compose_runs_the_model_export_script(services: dict[str, Any]) -> None:
    svc = services["model-export"]
    script = svc["entrypoint"][-1]
    assert Path(mounts(svc)[script][0]) == ROOT / "deploy" / "model-export.sh"
