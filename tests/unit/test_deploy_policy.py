"""A policy pass with a kept scanner: checkov (deploy/checkov/, its own virtualenv) over every rendered overlay
and deploy/Dockerfile (probes, resources, security contexts, NetworkPolicies, image pinning, ...). Every rule
it skips is justified in deploy/checkov/skips.yaml; a skip that no longer matches a failure is an error too."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy_fixtures import overlays, prepared_k8s, render

ROOT = Path(__file__).resolve().parents[2]
SKIPS = ROOT / "deploy" / "checkov" / "skips.yaml"
# What the scan must cover, or it proves nothing: liveness/readiness probes, CPU/memory requests and limits,
# privileged, privilege escalation, root, read-only root filesystem, capabilities, seccomp, the service-account
# token, NetworkPolicies for every pod, images by digest; in the Dockerfile a non-root USER.
MUST_RUN = {
    "kubernetes": {
        "CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13", "CKV_K8S_16",
        "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_31", "CKV_K8S_37", "CKV_K8S_38",
        "CKV_K8S_43", "CKV2_K8S_6",
    },
    "dockerfile": {"CKV_DOCKER_3", "CKV_DOCKER_8"},
}


def checkov() -> str:
    """The checkov program `make setup` installs in .venv/tools/checkov, else one on PATH."""
    local = ROOT / ".venv" / "tools" / "checkov" / "bin" / "checkov"
    if local.exists():
        return str(local)
    found = shutil.which("checkov")
    if found is None:
        pytest.fail("checkov is not installed: `make setup` puts it in .venv/tools/checkov (deploy/checkov/requirements.txt)")
    return found


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """checkov's JSON report per framework, run with no rule skipped."""
    tmp = tmp_path_factory.mktemp("checkov")
    target = tmp / "scan"
    target.mkdir()
    for overlay in overlays(prepared_k8s(tmp)):
        (target / f"overlay-{overlay.name}.yaml").write_text(yaml.safe_dump_all(render(overlay)))
    shutil.copyfile(ROOT / "deploy" / "Dockerfile", target / "Dockerfile")
    out = subprocess.run(
        [checkov(), "-d", str(target), "--framework", "kubernetes", "dockerfile", "-o", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp,
    )
    assert out.returncode in (0, 1), out.stderr[-2000:]  # 1: some rule failed
    reports = json.loads(out.stdout)
    return {r["check_type"]: r for r in (reports if isinstance(reports, list) else [reports])}


def skips() -> dict[str, str]:
    loaded = yaml.safe_load(SKIPS.read_text())
    assert isinstance(loaded, dict)
    return {str(k): str(v) for k, v in loaded.items()}


@pytest.mark.timeout(360)
def test_every_rule_passes_or_is_justified(scan: dict[str, Any]) -> None:
    justified = skips()
    failed: dict[str, list[str]] = {}
    for report in scan.values():
        for check in report["results"]["failed_checks"]:
            failed.setdefault(check["check_id"], []).append(f"{check['check_name']}: {check['resource']}")
    unjustified = {k: v for k, v in failed.items() if k not in justified}
    assert not unjustified, "fix, or justify in deploy/checkov/skips.yaml:\n" + "\n".join(
        f"{k}: {line}" for k, lines in sorted(unjustified.items()) for line in lines
    )
    stale = set(justified) - set(failed)
    assert not stale, f"skips that no longer match a failure, delete them from deploy/checkov/skips.yaml: {stale}"


@pytest.mark.timeout(360)
def test_the_scan_covers_what_a_deployment_review_checks(scan: dict[str, Any]) -> None:
    assert set(MUST_RUN) <= set(scan), sorted(scan)
    for framework, wanted in MUST_RUN.items():
        report = scan[framework]
        assert report["summary"]["parsing_errors"] == 0, report["results"].get("parsing_errors")
        ran = {c["check_id"] for part in ("passed_checks", "failed_checks") for c in report["results"][part]}
        assert wanted <= ran, f"{framework}: checkov no longer runs {sorted(wanted - ran)}"


@pytest.mark.timeout(60)
def test_every_skip_names_a_rule_and_says_why() -> None:
    for rule, why in skips().items():
        assert rule.startswith(("CKV_", "CKV2_")), rule
        assert len(why.split()) >= 12, f"{rule}: say why in a sentence or two"
