"""Kubernetes manifests (deploy/k8s): rendered like kustomize (tests/unit/deploy_fixtures.py), validated against
the Kubernetes schemas, and checked for what a production deployment needs (probes, resources, non-root, one
autoscaler that owns the worker count, consistent names, secrets in Secrets, hash-suffixed configuration).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy_fixtures import (
    K8S,
    KustomizeSubsetError,
    Obj,
    batching,
    by_kind,
    combo,
    config_of,
    k8s_containers,
    kustomization,
    kustomize_binary,
    largest_batches_mb,
    normalized,
    one,
    overlays,
    pod_specs,
    pod_template,
    prepared_k8s,
    render,
    renders,
)
from tests.unit.deploy_fixtures import containers as _containers

ROOT = Path(__file__).resolve().parents[2]
BASE = K8S / "base"
OVERLAYS = overlays(K8S)
# Oldest Kubernetes minor still commonly run, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", "latest")
_pod_specs = pod_specs
_kustomization = kustomization


# ---- tests -------------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_every_kustomization_is_within_the_rendered_subset() -> None:
    folders = [p.parent for p in K8S.rglob("kustomization.yaml")]
    assert {BASE, *OVERLAYS} <= set(folders)
    for folder in folders:
        _kustomization(folder)  # raises on a field render() would not apply


@pytest.mark.timeout(120)
def test_subset_renderer_matches_real_kustomize(tmp_path: Path) -> None:
    """Only where a kustomize is installed (this is the check that render() is faithful)."""
    cmd = kustomize_binary()
    if cmd is None:
        pytest.skip("no kustomize or kubectl on PATH: render() is used alone")
    k8s = prepared_k8s(tmp_path)
    for folder in [k8s / "base", combo(k8s, tmp_path, ["hpa"]), *overlays(k8s)]:
        out = subprocess.run([*cmd, str(folder)], capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        real = normalized([d for d in yaml.safe_load_all(out.stdout) if d])
        ours = normalized(render(folder))
        assert sorted(ours) == sorted(real), folder
        for key in real:
            assert ours[key] == real[key], f"{folder}: {key} differs"


@pytest.mark.timeout(240)
def test_manifests_validate_against_kubernetes_schemas(tmp_path: Path) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail(
            "kubernetes-validate is not installed: `pip install kubernetes-validate==1.37.0` (ships the schemas)"
        )
    failures = []
    for label, objs in renders(tmp_path).items():
        for obj in objs:
            if obj["apiVersion"].startswith("keda.sh/"):
                continue  # a CRD: test_keda_scaledobject checks it
            for version in K8S_VERSIONS:
                v = kubernetes_validate.latest_version() if version == "latest" else version
                try:
                    kubernetes_validate.validate(obj, v, strict=True)
                except kubernetes_validate.ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    failures.append(f"{label}: {obj['kind']}/{obj['metadata']['name']} (k8s {v}): {path}: {e.message}")
    assert not failures, "\n".join(failures)


@pytest.mark.timeout(60)
def test_keda_scaledobject_is_complete_and_matches_the_config(tmp_path: Path) -> None:
    for label, objs in renders(tmp_path).items():
        for so in by_kind(objs, "ScaledObject"):
            assert so["apiVersion"] == "keda.sh/v1alpha1"
            spec = so["spec"]
            target = spec["scaleTargetRef"]
            assert target.get("kind", "Deployment") == "Deployment"
            one(objs, "Deployment", target["name"])
            cfg = config_of(objs)
            assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
            assert spec["maxReplicaCount"] == int(cfg["MW_PARTITIONS"]), f"{label}: maxReplicaCount != partitions"
            assert spec["triggers"], label
            for trig in spec["triggers"]:
                assert {"type", "metadata"} <= set(trig), label
                assert all(isinstance(v, str) for v in trig["metadata"].values()), (
                    f"{label}: metadata values are strings"
                )
                assert trig["type"] == "kafka"
                meta = trig["metadata"]
                assert meta["bootstrapServers"] == cfg["MW_KAFKA"], label
                assert meta["topic"] == cfg["MW_TOPIC"], label
                assert meta["consumerGroup"] == cfg["MW_GROUP"], label
                assert int(meta["lagThreshold"]) > 0
                if "authenticationRef" in trig:
                    auth = one(objs, "TriggerAuthentication", trig["authenticationRef"]["name"])
                    assert auth["apiVersion"] == "keda.sh/v1alpha1"
                    for ref in auth["spec"]["secretTargetRef"]:
                        assert {"parameter", "name", "key"} <= set(ref)
                        assert ref["parameter"] in {"sasl", "tls", "username", "password", "ca", "cert", "key"}
                        secrets = [s for s in by_kind(objs, "Secret") if s["metadata"]["name"] == ref["name"]]
                        if label.startswith("overlays/"):
                            assert secrets and ref["key"] in secrets[0]["data"], f"{label}: {ref} not in the Secret"


@pytest.mark.timeout(60)
def test_hpa_alternative_scales_workers_on_cpu_up_to_the_partitions(tmp_path: Path) -> None:
    objs = render(combo(prepared_k8s(tmp_path), tmp_path, ["hpa"]))
    (hpa,) = by_kind(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "maskwatch-worker"}
    assert hpa["spec"]["maxReplicas"] == int(config_of(objs)["MW_PARTITIONS"])
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    worker = one(objs, "Deployment", "maskwatch-worker")
    assert all("cpu" in c["resources"]["requests"] for c in _containers(worker)), "CPU utilisation needs requests"


@pytest.mark.timeout(60)
def test_no_rendering_runs_two_autoscalers_on_one_deployment(tmp_path: Path) -> None:
    for label, objs in renders(tmp_path).items():
        targets = [
            o["spec"]["scaleTargetRef"]["name"]
            for o in objs
            if o["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")
        ]
        assert len(targets) == len(set(targets)), f"{label}: {targets}"
    for overlay in OVERLAYS:
        comps = {Path(c).name for c in _kustomization(overlay).get("components", [])}
        assert not {"keda", "hpa"} <= comps, overlay


def _probe_ports(probe: Obj) -> list[Any]:
    return [probe[k]["port"] for k in ("httpGet", "tcpSocket", "grpc") if k in probe]


@pytest.mark.timeout(60)
def test_every_workload_has_probes_resources_and_runs_non_root(tmp_path: Path) -> None:
    problems = []
    for label, objs in renders(tmp_path).items():
        for obj in objs:
            for pod in _pod_specs(obj):
                where = f"{label}: {obj['kind']}/{obj['metadata']['name']}"
                psc = pod.get("securityContext", {})
                if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                    problems.append(f"{where}: seccompProfile RuntimeDefault")
                if pod.get("automountServiceAccountToken") is not False:
                    problems.append(f"{where}: automountServiceAccountToken false")
                for c in pod["containers"]:
                    at = f"{where} container {c['name']}"
                    csc = c.get("securityContext", {})
                    if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
                        problems.append(f"{at}: runAsNonRoot")
                    uid = csc.get("runAsUser", psc.get("runAsUser"))
                    if not isinstance(uid, int) or uid == 0:
                        problems.append(f"{at}: numeric non-zero runAsUser (an image's named USER cannot be verified)")
                    if csc.get("allowPrivilegeEscalation") is not False:
                        problems.append(f"{at}: allowPrivilegeEscalation false")
                    if csc.get("readOnlyRootFilesystem") is not True:
                        problems.append(f"{at}: readOnlyRootFilesystem")
                    if csc.get("capabilities", {}).get("drop") != ["ALL"]:
                        problems.append(f"{at}: capabilities drop ALL")
                    res = c.get("resources", {})
                    for part in ("requests", "limits"):
                        if not {"cpu", "memory"} <= set(res.get(part, {})):
                            problems.append(f"{at}: resources.{part} cpu and memory")
                    if obj["kind"] in ("Job", "CronJob"):
                        continue  # runs to completion: no probes
                    for probe in ("livenessProbe", "readinessProbe"):
                        if probe not in c:
                            problems.append(f"{at}: {probe}")
                    names = {p.get("name") for p in c.get("ports", [])} | {
                        p["containerPort"] for p in c.get("ports", [])
                    }
                    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                        for port in _probe_ports(c.get(probe, {})):
                            if port not in names:
                                problems.append(f"{at}: {probe} port {port} is not a container port")
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(60)
def test_graceful_shutdown_outlasts_the_worker_drain() -> None:
    worker = one(render(BASE), "Deployment", "maskwatch-worker")
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 30


@pytest.mark.timeout(60)
def test_references_resolve_in_every_overlay(tmp_path: Path) -> None:
    for overlay in overlays(prepared_k8s(tmp_path)):
        objs = render(overlay)
        names = {(o["kind"], o["metadata"]["name"]) for o in objs}
        missing: list[str] = []

        def need(kind: str, name: str, optional: bool, where: str, names: set[tuple[str, str]] = names) -> None:
            if not optional and (kind, name) not in names:
                missing.append(f"{where}: {kind}/{name}")  # noqa: B023 - checked within this iteration

        for obj in objs:
            where = f"{obj['kind']}/{obj['metadata']['name']}"
            for pod in _pod_specs(obj):
                for vol in pod.get("volumes", []):
                    if "configMap" in vol:
                        need("ConfigMap", vol["configMap"]["name"], vol["configMap"].get("optional", False), where)
                    if "secret" in vol:
                        need("Secret", vol["secret"]["secretName"], vol["secret"].get("optional", False), where)
                for c in pod["containers"]:
                    for src in c.get("envFrom", []):
                        for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                            if field in src:
                                need(kind, src[field]["name"], src[field].get("optional", False), where)
                    for env in c.get("env", []):
                        for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                            ref = env.get("valueFrom", {}).get(field)
                            if ref is None:
                                continue
                            need(kind, ref["name"], ref.get("optional", False), where)
                            source = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == ref["name"]]
                            if source and not ref.get("optional", False):
                                assert ref["key"] in source[0]["data"], f"{overlay}: {where}: key {ref['key']}"
            if obj["kind"] in ("Service", "PodDisruptionBudget"):
                sel = obj["spec"]["selector"]
                sel = sel.get("matchLabels", sel)
                pods = [
                    d
                    for d in by_kind(objs, "Deployment")
                    if sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()
                ]
                if not pods:
                    missing.append(f"{where}: selector {sel} matches no Deployment")
            if obj["kind"] == "Ingress":
                for rule in obj["spec"]["rules"]:
                    for p in rule["http"]["paths"]:
                        svc = one(objs, "Service", p["backend"]["service"]["name"])
                        port = p["backend"]["service"]["port"]
                        assert any(
                            port.get("name") == sp.get("name") or port.get("number") == sp["port"]
                            for sp in svc["spec"]["ports"]
                        )
        assert not missing, f"{overlay}:\n" + "\n".join(missing)


@pytest.mark.timeout(60)
def test_each_deployment_selects_its_own_pods() -> None:
    for d in by_kind(render(BASE), "Deployment"):
        assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    selectors = [
        tuple(sorted(d["spec"]["selector"]["matchLabels"].items())) for d in by_kind(render(BASE), "Deployment")
    ]
    assert len(selectors) == len(set(selectors)), "two Deployments would fight over the same pods"


@pytest.mark.timeout(60)
def test_producers_cover_every_camera_shard_once() -> None:
    producers = [
        d for d in by_kind(render(BASE), "Deployment") if d["metadata"]["name"].startswith("maskwatch-producer")
    ]
    shards = []
    for d in producers:
        assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["type"] == "Recreate", d["metadata"]["name"]
        (c,) = d["spec"]["template"]["spec"]["containers"]
        args = c["args"]
        m = re.fullmatch(r"(\d+)/(\d+)", args[args.index("--shard") + 1])
        assert m, args
        shards.append((int(m[1]), int(m[2])))
        assert args[args.index("--site") + 1].startswith(
            next(v["mountPath"] for v in c["volumeMounts"] if v["name"] == "site")
        )
    n = {s[1] for s in shards}
    assert len(n) == 1 and sorted(s[0] for s in shards) == list(range(n.pop())), shards


@pytest.mark.timeout(60)
def test_secrets_are_in_secrets_and_git_holds_only_their_examples(tmp_path: Path) -> None:
    """Camera credentials (the site file), passwords and tokens reach pods through Secrets only; the files an
    overlay generates them from are ignored by git, which carries `<file>.example` instead."""
    credential = re.compile(r"[a-z+]+://[^/@\s:]+:[^/@\s]+@")
    for label, objs in renders(tmp_path).items():
        for cm in by_kind(objs, "ConfigMap"):
            for key, value in cm.get("data", {}).items():
                assert not re.search(r"PASSWORD|TOKEN|SECRET", key), f"{label}: ConfigMap {cm['metadata']['name']}: {key}"
                assert not credential.search(value), f"{label}: ConfigMap {cm['metadata']['name']}:{key} holds a password"
        for obj in objs:
            for pod in pod_specs(obj):
                assert not [v for v in pod.get("volumes", []) if "configMap" in v and "site" in v["name"]], label
    for overlay in OVERLAYS:
        for spec in kustomization(overlay).get("secretGenerator", []):
            for entry in [*spec.get("envs", []), *spec.get("files", [])]:
                rel = entry.rpartition("=")[2]
                if rel == "kafka-ca.pem":
                    continue  # a CA certificate is public; empty unless the brokers' CA is private
                assert (overlay / f"{rel}.example").is_file(), f"{overlay.name}: commit {rel}.example"
                ignored = subprocess.run(
                    ["git", "check-ignore", "-q", str(overlay / rel)], cwd=ROOT, capture_output=True, check=False
                )
                assert ignored.returncode == 0, f"{overlay.name}/{rel} holds secrets: git must ignore it"


@pytest.mark.timeout(60)
def test_generated_config_and_secrets_are_hash_suffixed_so_a_change_rolls_the_pods(tmp_path: Path) -> None:
    """A changed value (a rotated password, a new partition count) renames the object, so every pod that reads
    it is rolled; KEDA's TriggerAuthentication follows the new Secret name."""
    for overlay in overlays(prepared_k8s(tmp_path)):
        objs = render(overlay)
        for kind, name in (("ConfigMap", "maskwatch-config"), ("Secret", "maskwatch-secrets"), ("Secret", "maskwatch-site")):
            actual = one(objs, kind, name)["metadata"]["name"]
            assert re.fullmatch(rf"{name}-[a-z0-9]{{10}}", actual), f"{overlay.name}: {kind}/{actual} has no hash"
        secret = one(objs, "Secret", "maskwatch-secrets")["metadata"]["name"]
        for auth in by_kind(objs, "TriggerAuthentication"):
            assert {ref["name"] for ref in auth["spec"]["secretTargetRef"]} == {secret}, overlay.name
        (secrets_env,) = kustomization(overlay)["secretGenerator"][0]["envs"]
        path = overlay / secrets_env
        path.write_text(path.read_text() + "MW_DASHBOARD_TOKEN=rotated-token-value\n")
        rotated = render(overlay)
        assert one(rotated, "Secret", "maskwatch-secrets")["metadata"]["name"] != secret, "rotation keeps the name"
        dashboard = one(rotated, "Deployment", "maskwatch-dashboard")
        assert one(objs, "Deployment", "maskwatch-dashboard") != dashboard, "rotation does not roll the dashboard"


@pytest.mark.timeout(60)
def test_autoscaled_workers_name_no_replicas_and_keda_starts_where_the_hpa_does(tmp_path: Path) -> None:
    """`kubectl apply -k` must not reset the autoscaler's count (each reset is a consumer-group rebalance)."""
    mins = {}
    for label, objs in renders(tmp_path).items():
        for scaler in [*by_kind(objs, "ScaledObject"), *by_kind(objs, "HorizontalPodAutoscaler")]:
            target = one(objs, "Deployment", scaler["spec"]["scaleTargetRef"]["name"])
            assert "replicas" not in target["spec"], f"{label}: {target['metadata']['name']} names replicas"
            mins[f"{label} {scaler['kind']}"] = scaler["spec"].get("minReplicaCount", scaler["spec"].get("minReplicas"))
    assert set(mins.values()) == {2}, mins


@pytest.mark.timeout(120)
def test_keda_and_hpa_together_do_not_render(tmp_path: Path) -> None:
    k8s = prepared_k8s(tmp_path)
    both = combo(k8s, tmp_path, ["keda", "hpa"])
    with pytest.raises(KustomizeSubsetError, match="already registered"):
        render(both)
    cmd = kustomize_binary()
    if cmd is not None:  # the refusal is kustomize's own, so a site's overlay gets it too
        out = subprocess.run([*cmd, str(both)], capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode != 0 and "maskwatch-worker-autoscaler" in out.stderr, out.stderr


@pytest.mark.timeout(60)
def test_topic_setup_can_be_reapplied_at_any_time(tmp_path: Path) -> None:
    """A Job's pod template is immutable: re-applying a changed one fails while it exists. The topics are
    reconciled by a CronJob, whose job template may change."""
    for label, objs in renders(tmp_path).items():
        assert not by_kind(objs, "Job"), f"{label}: a Job cannot be re-applied with a new config hash"
        for cron in by_kind(objs, "CronJob"):
            assert cron["spec"]["concurrencyPolicy"] == "Forbid", label
            (c,) = pod_template(cron)["spec"]["containers"]
            assert c["command"][-1].endswith("create-topics.sh"), label


@pytest.mark.timeout(60)
def test_example_overlay_images_are_pinned_by_digest(tmp_path: Path) -> None:
    for overlay in overlays(prepared_k8s(tmp_path)):
        for obj in render(overlay):
            for c in _containers(obj):
                assert re.search(r"@sha256:[0-9a-f]{64}$", c["image"]), f"{overlay.name}: {c['image']} by tag"


@pytest.mark.timeout(60)
def test_tf_serving_serves_the_config_files_and_is_ready_only_when_the_model_is_available() -> None:
    objs = render(BASE)
    (c,) = one(objs, "Deployment", "maskwatch-tf-serving")["spec"]["template"]["spec"]["containers"]
    args = c["args"]
    assert "--model_config_file=/config/models.config" in args
    assert "--enable_batching" in args and "--batching_parameters_file=/config/batching.config" in args
    script = c["readinessProbe"]["exec"]["command"][-1]
    assert "/v1/models/mask_detector" in script and "AVAILABLE" in script and "8501" in script
    assert c["startupProbe"] == {**c["startupProbe"], "exec": c["readinessProbe"]["exec"]}
    svc = one(objs, "Service", "maskwatch-tf-serving")
    assert (
        config_of(objs)["MW_SERVING"]
        == f"{svc['metadata']['name']}:{next(p['port'] for p in svc['spec']['ports'] if p['name'] == 'grpc')}"
    )


@pytest.mark.timeout(60)
def test_tf_serving_memory_limit_holds_its_largest_batches(tmp_path: Path) -> None:
    """As in compose (tests/unit/test_deploy_compose.py): the batch threads' largest batches fit the pod's limit, and
    every overlay's worker polls no more frames than one batch holds."""
    (c,) = one(render(BASE), "Deployment", "maskwatch-tf-serving")["spec"]["template"]["spec"]["containers"]
    m = re.fullmatch(r"(\d+)(Mi|Gi)", c["resources"]["limits"]["memory"])
    assert m, c["resources"]["limits"]["memory"]
    limit_mb = int(m[1]) * (1024 if m[2] == "Gi" else 1)
    cfg = batching(ROOT / "deploy" / "batching.config")
    assert largest_batches_mb(cfg) <= limit_mb
    polls = [
        int(view.env["MW_MAX_POLL_RECORDS"])
        for overlay in overlays(prepared_k8s(tmp_path))
        for view in k8s_containers(render(overlay), overlay.name)
        if "MW_MAX_POLL_RECORDS" in view.env
    ]
    assert polls and max(polls) <= cfg["max_batch_size"], polls


@pytest.mark.timeout(60)
def test_services_expose_only_the_ports_in_use(tmp_path: Path) -> None:
    """TF Serving's REST port answers only its own pod's probe; the dashboard serves HTTP on one port."""
    for label, objs in renders(tmp_path).items():
        ports = {s["metadata"]["name"]: sorted(p["port"] for p in s["spec"]["ports"]) for s in by_kind(objs, "Service")}
        assert ports == {"maskwatch-tf-serving": [8500], "maskwatch-dashboard": [80]}, label


@pytest.mark.timeout(60)
def test_model_server_threads_match_its_cpu_limit(tmp_path: Path) -> None:
    """The image bakes deploy/batching.config: batches run at once = TensorFlow's threads = the pod's CPU limit."""
    threads = int(re.search(r"num_batch_threads\s*\{\s*value:\s*(\d+)", (ROOT / "deploy" / "batching.config").read_text())[1])
    assert "deploy/batching.config /config/" in (ROOT / "deploy" / "Dockerfile").read_text()
    for label, objs in renders(tmp_path).items():
        (c,) = pod_specs(one(objs, "Deployment", "maskwatch-tf-serving"))
        (container,) = c["containers"]
        flags = dict(a.removeprefix("--").split("=", 1) for a in container["args"] if "=" in a)
        cpu = float(container["resources"]["limits"]["cpu"])
        assert cpu == threads == int(flags["tensorflow_intra_op_parallelism"]) == int(
            flags["tensorflow_inter_op_parallelism"]
        ), label


@pytest.mark.timeout(60)
def test_dashboard_behind_the_ingress_believes_exactly_that_one_proxy(tmp_path: Path) -> None:
    """Otherwise every browser shares the ingress controller's address: one client's failed logins would lock
    out all (rate limits per client address), and cookies would not be marked Secure."""
    for label, objs in renders(tmp_path).items():
        if not by_kind(objs, "Ingress"):
            continue
        (c,) = pod_specs(one(objs, "Deployment", "maskwatch-dashboard"))
        env = {e["name"]: e.get("value") for e in c["containers"][0]["env"]}
        assert env["MW_DASHBOARD_TRUSTED_PROXIES"] == "1", label
        ingress = [p for p in by_kind(objs, "NetworkPolicy") if p["metadata"]["name"] == "maskwatch-dashboard-from-ingress"]
        assert ingress, f"{label}: only the ingress controller may reach the dashboard"


@pytest.mark.timeout(60)
def test_the_dashboard_token_and_the_redis_url_are_required(tmp_path: Path) -> None:
    """A Secret without them keeps the pods from starting (the dashboard would refuse anyway, later and less clearly)."""
    for label, objs in renders(tmp_path).items():
        for obj in objs:
            for c in _containers(obj):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref and e["name"] in ("MW_DASHBOARD_TOKEN", "MW_REDIS_URL"):
                        assert not ref.get("optional"), f"{label}: {obj['metadata']['name']}: {e['name']} is optional"
        (dash,) = pod_specs(one(objs, "Deployment", "maskwatch-dashboard"))
        assert "MW_DASHBOARD_TOKEN" in {e["name"] for e in dash["containers"][0]["env"]}, label
