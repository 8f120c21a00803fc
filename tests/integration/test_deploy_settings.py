"""What renders, starts: every MaskWatch container of every Kubernetes overlay and of docker-compose.yml (with
deploy/env.example as its .env) loads its service's settings from the environment and command line the pod
would get (ConfigMaps, Secrets, `env`, `envFrom`, mounted files), and its health-check probes pass against a
real redis-server holding its heartbeat. Only the Redis address and key prefix are swapped for the test's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from maskwatch.store import Store
from tests.unit.deploy_fixtures import (
    ENV_EXAMPLE,
    ContainerView,
    compose_config,
    compose_containers,
    k8s_containers,
    overlays,
    prepared_k8s,
    render,
)

ROOT = Path(__file__).resolve().parents[2]
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"
SERVICES = {"worker", "producer", "dashboard"}

# Run in a clean process with exactly the container's environment: the service's own flag parsing over its
# settings class, then the site file it was pointed at, parsed as the service parses it.
LOAD = """
import json, sys
service, args = sys.argv[1], json.loads(sys.argv[2])
from importlib import import_module
settings = import_module(f"{service}.__main__").parse_settings(args)
site_file = getattr(settings, "site_file", None)
cameras = None
if site_file is not None:
    from maskwatch.site import load_site
    cameras = len(load_site(site_file).cameras)
print(json.dumps({"reads_site_file": "site_file" in type(settings).model_fields, "site_file": site_file,
                  "cameras": cameras}))
"""


def deployments(tmp: Path) -> dict[str, list[ContainerView]]:
    """label -> the MaskWatch containers of that deployment, as their processes see them."""
    k8s = prepared_k8s(tmp)
    out = {f"overlays/{o.name}": k8s_containers(render(o), f"overlays/{o.name}") for o in overlays(k8s)}
    out["compose (env.example)"] = compose_containers(compose_config(ENV_EXAMPLE))
    return {label: [c for c in views if c.image_name in SERVICES] for label, views in out.items()}


def run_env(env: dict[str, str], home: Path) -> dict[str, str]:
    """The container's environment and nothing of the caller's but what runs Python from this checkout."""
    return {**env, "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture
def store(redis_url: str, names: dict[str, str]) -> Iterator[Store]:
    s = Store.from_url(redis_url, names["redis_prefix"])
    yield s
    s.close()


@pytest.mark.timeout(240)
def test_every_container_loads_its_settings_site_file_and_health_check_from_what_the_deployment_gives_it(
    tmp_path: Path, redis_url: str, names: dict[str, str], store: Store
) -> None:
    problems: list[str] = []
    checked: dict[str, set[str]] = {}
    for d, (label, views) in enumerate(deployments(tmp_path / "render").items()):
        assert {v.image_name for v in views} == SERVICES, f"{label}: {[v.where for v in views]}"
        checked[label] = set()
        for n, view in enumerate(views):
            files = tmp_path / f"{d}-{n}-{view.image_name}"
            files.mkdir()
            args, env = view.localized(files)
            if view.image_name != "dashboard" and args[:1] == ["python"]:
                args = args[3:]  # an explicit `python -m service` command; the image's entrypoint otherwise
            out = subprocess.run(
                [sys.executable, "-c", LOAD, view.image_name, json.dumps(args)],
                cwd=files,  # `-c` puts the working directory first on sys.path: only PYTHONPATH's code runs
                env=run_env(env, files),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if out.returncode != 0:
                problems.append(f"{view.where}: settings do not load:\n{out.stderr.strip()[-1500:]}")
                continue
            loaded = json.loads(out.stdout.strip().splitlines()[-1])
            if loaded["reads_site_file"] and not loaded["cameras"]:
                problems.append(f"{view.where}: reads a site file but is given none ({loaded['site_file']})")
            # the probes, against our Redis holding this container's heartbeat
            env = {**env, "MW_REDIS_URL": redis_url, "MW_REDIS_PREFIX": names["redis_prefix"]}
            host = socket.gethostname()
            if view.image_name == "worker":
                store.heartbeat("worker", env.get("MW_WORKER_ID", f"{host}-1"), {"status": "ok", "frames": 1})
            elif view.image_name == "producer":
                store.heartbeat("producer", f"{host}-1", {"host": host, "cameras": 1, "alive": 1})
            for probe, command in view.probes.items():
                if command[:2] != ["python", "/app/healthcheck.py"]:
                    problems.append(f"{view.where}: {probe} runs {command}, not the health check")
                    continue
                if command[2] == "http":
                    continue  # the dashboard's /healthz: nothing listens here (tests/integration/test_dashboard_*)
                res = subprocess.run(
                    [sys.executable, str(HEALTHCHECK), *command[2:]],
                    cwd=files,
                    env=run_env(env, files),
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                if res.returncode != 0:
                    problems.append(f"{view.where}: {probe} {command[2:]} fails:\n{res.stderr.strip()[-1500:]}")
            checked[label].add(view.image_name)
    assert not problems, "\n\n".join(problems)
    assert all(services == SERVICES for services in checked.values()), checked
