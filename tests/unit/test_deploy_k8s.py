"""Kubernetes manifests (deploy/k8s): rendered like kustomize, validated against the Kubernetes schemas, and
checked for what a production deployment needs (probes, resources, non-root, one autoscaler, consistent names).

`kubectl kustomize` is not on a fresh CI machine (no Debian or PyPI package ships a current one), so the
kustomizations are rendered by `render()` below, a subset of kustomize covering exactly the fields deploy/k8s
uses (a kustomization using any other field fails loudly). Where a real kustomize is on PATH, a test checks
that both render the same objects.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())
COMPONENTS = K8S / "components"
# Oldest Kubernetes minor still commonly run, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", "latest")

Obj = dict[str, Any]

# ---- a kustomize subset ------------------------------------------------------------------------------------

SUPPORTED_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "images",
    "replicas",
    "patches",
    "configMapGenerator",
    "secretGenerator",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
}
# Strategic-merge keys of the built-in kinds' lists that deploy/k8s patches; other lists are replaced.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name", "volumeMounts": "name"}
BUILTIN_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"}


class KustomizeSubsetError(ValueError):
    """A kustomization uses something render() does not implement."""


def load_docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _kustomization(folder: Path) -> Obj:
    k = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(k) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeSubsetError(f"{folder}: fields {sorted(unknown)} are outside the tested kustomize subset")
    return k


def kustomize_hash(obj: Obj) -> str:
    """kustomize's content hash suffix of a generated ConfigMap or Secret (api/hasher).

    The name hashes as "": kustomize looks up "metadata/name" as a single field name, which finds nothing.
    """
    if obj["kind"] == "ConfigMap":
        m: Obj = {"kind": "ConfigMap", "name": "", "data": obj.get("data", {})}
    else:
        m = {"kind": "Secret", "type": obj.get("type", "Opaque"), "name": "", "data": obj.get("data", {})}
    encoded = json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        encoded = encoded.replace(ch, esc)  # Go's json.Marshal escapes these
    digest = hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise KustomizeSubsetError(f"{path}: line without '=': {line!r}")
        out[key] = value
    return out


def _generate(folder: Path, kind: str, spec: Obj) -> tuple[Obj, bool]:
    """One generated ConfigMap or Secret, and whether it gets a hash suffix."""
    unknown = set(spec) - {"name", "files", "envs", "literals", "options"}
    if unknown:
        raise KustomizeSubsetError(f"{folder}: generator fields {sorted(unknown)} are outside the subset")
    data: dict[str, str] = {}
    for entry in spec.get("files", []):
        key, _, rel = entry.rpartition("=") if "=" in entry else ("", "", entry)
        data[key or Path(rel).name] = (folder / rel).read_text(encoding="utf-8")
    for rel in spec.get("envs", []):
        data.update(_env_file(folder / rel))
    for lit in spec.get("literals", []):
        key, _, value = lit.partition("=")
        data[key] = value
    obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
    if kind == "Secret":
        obj["type"] = "Opaque"
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        obj["data"] = data
    return obj, not spec.get("options", {}).get("disableNameSuffixHash", False)


def _merge(target: Any, patch: Any, strategic: bool) -> Any:
    """Strategic merge (built-in kinds, lists merged by MERGE_KEYS) or JSON merge patch (custom resources)."""
    if not isinstance(target, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif strategic and key in MERGE_KEYS and isinstance(value, list) and isinstance(out.get(key), list):
            mk = MERGE_KEYS[key]
            merged = list(out[key])
            for item in value:
                at = next((i for i, old in enumerate(merged) if old.get(mk) == item.get(mk)), None)
                if at is None:
                    merged.insert(0, copy.deepcopy(item))  # kustomize puts new list items first
                else:
                    merged[at] = _merge(merged[at], item, strategic)
            out[key] = merged
        elif key in out:
            out[key] = _merge(out[key], value, strategic)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _pod_specs(obj: Obj) -> Iterator[Obj]:
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield spec["template"]["spec"]
    elif obj["kind"] == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]
    elif obj["kind"] == "Pod":
        yield spec


def _containers(obj: Obj) -> Iterator[Obj]:
    for pod in _pod_specs(obj):
        yield from pod.get("initContainers", [])
        yield from pod.get("containers", [])


def _split_image(image: str) -> tuple[str, str, str]:
    """(name, tag, digest) of an image reference."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest
    return name, "", digest


def _rename_refs(objs: list[Obj], renames: dict[tuple[str, str], str]) -> None:
    """Point references to generated ConfigMaps and Secrets at their hashed names (kustomize's nameReference)."""

    def new(kind: str, name: str) -> str:
        return renames.get((kind, name), name)

    for obj in objs:
        for pod in _pod_specs(obj):
            for vol in pod.get("volumes", []):
                if "configMap" in vol:
                    vol["configMap"]["name"] = new("ConfigMap", vol["configMap"]["name"])
                if "secret" in vol:
                    vol["secret"]["secretName"] = new("Secret", vol["secret"]["secretName"])
            for c in list(pod.get("initContainers", [])) + list(pod.get("containers", [])):
                for src in c.get("envFrom", []):
                    if "configMapRef" in src:
                        src["configMapRef"]["name"] = new("ConfigMap", src["configMapRef"]["name"])
                    if "secretRef" in src:
                        src["secretRef"]["name"] = new("Secret", src["secretRef"]["name"])
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {})
                    if "configMapKeyRef" in ref:
                        ref["configMapKeyRef"]["name"] = new("ConfigMap", ref["configMapKeyRef"]["name"])
                    if "secretKeyRef" in ref:
                        ref["secretKeyRef"]["name"] = new("Secret", ref["secretKeyRef"]["name"])


def _apply(folder: Path, k: Obj, objs: list[Obj], renames: dict[tuple[str, str], str]) -> list[Obj]:
    """Generators, then transformers in kustomize's order: patches, namespace, replicas, images."""
    for field, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
        for spec in k.get(field, []):
            obj, hashed = _generate(folder, kind, spec)
            if hashed:
                hashed_name = f"{spec['name']}-{kustomize_hash(obj)}"
                renames[(kind, spec["name"])] = hashed_name
                obj["metadata"]["name"] = hashed_name
            objs.append(obj)
    for entry in k.get("patches", []):
        if set(entry) != {"path"}:
            raise KustomizeSubsetError(f"{folder}: only `patches: - path:` is in the subset, got {entry}")
        for patch in load_docs(folder / entry["path"]):
            key = (patch["kind"], patch["metadata"]["name"])
            at = [i for i, o in enumerate(objs) if (o["kind"], o["metadata"]["name"]) == key]
            if len(at) != 1:
                raise KustomizeSubsetError(f"{folder}/{entry['path']}: patch target {key} found {len(at)} times")
            objs[at[0]] = _merge(objs[at[0]], patch, strategic=patch["apiVersion"] in BUILTIN_GROUPS)
    if "namespace" in k:
        for obj in objs:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = k["namespace"]
    for entry in k.get("replicas", []):
        for obj in objs:
            if obj["kind"] in ("Deployment", "StatefulSet", "ReplicaSet") and obj["metadata"]["name"] == entry["name"]:
                obj["spec"]["replicas"] = entry["count"]
    for entry in k.get("images", []):
        for obj in objs:
            for c in _containers(obj):
                name, tag, digest = _split_image(c["image"])
                if name != entry["name"]:
                    continue
                name = entry.get("newName", name)
                tag = entry.get("newTag", tag)
                digest = entry.get("digest", digest)
                c["image"] = name + (f":{tag}" if tag and not digest else "") + (f"@{digest}" if digest else "")
    return objs


def _build(folder: Path, renames: dict[tuple[str, str], str], component: bool = False) -> list[Obj]:
    k = _kustomization(folder)
    expected = "Component" if component else "Kustomization"
    if k.get("kind", "Kustomization") != expected:
        raise KustomizeSubsetError(f"{folder}: expected kind {expected}, found {k.get('kind')}")
    objs: list[Obj] = []
    for res in k.get("resources", []):
        path = (folder / res).resolve()
        objs.extend(_build(path, renames) if path.is_dir() else load_docs(path))
    for comp in k.get("components", []):
        objs = _apply_component((folder / comp).resolve(), objs, renames)
    return _apply(folder, k, objs, renames)


def _apply_component(folder: Path, objs: list[Obj], renames: dict[tuple[str, str], str]) -> list[Obj]:
    k = _kustomization(folder)
    if k.get("kind") != "Component":
        raise KustomizeSubsetError(f"{folder}: a component must be kind Component")
    for res in k.get("resources", []):
        objs.extend(load_docs(folder / res))
    return _apply(folder, k, objs, renames)


def render(folder: Path) -> list[Obj]:
    """What `kustomize build folder` prints, as objects (for the subset deploy/k8s uses)."""
    renames: dict[tuple[str, str], str] = {}
    objs = _build(folder.resolve(), renames)
    _rename_refs(objs, renames)
    return objs


def kustomize_binary() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def normalized(objs: list[Obj]) -> dict[tuple[str, str, str], Obj]:
    """Objects keyed by kind/namespace/name, Secret data decoded, lists of named items sorted by name."""

    def norm(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            items = [norm(x) for x in v]
            if items and all(isinstance(x, dict) and "name" in x for x in items):
                items.sort(key=lambda x: str(x["name"]))
            return items
        return v

    out = {}
    for obj in objs:
        obj = norm(obj)
        if obj["kind"] == "Secret":
            obj["data"] = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
        out[(obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = obj
    return out


# ---- what gets rendered ------------------------------------------------------------------------------------


def combo(tmp_path: Path, components: list[str]) -> Path:
    """A throwaway kustomization: the base plus the named components."""
    folder = tmp_path / ("with-" + "-".join(components))
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(BASE, folder)],
                "components": [os.path.relpath(COMPONENTS / c, folder) for c in components],
            }
        )
    )
    return folder


def renders(tmp_path: Path) -> dict[str, list[Obj]]:
    """Every rendering that must be valid: the base alone, with each component, and every overlay."""
    out = {"base": render(BASE)}
    for comp in sorted(p.name for p in COMPONENTS.iterdir() if p.is_dir()):
        out[f"base+{comp}"] = render(combo(tmp_path, [comp]))
    for overlay in OVERLAYS:
        out[f"overlays/{overlay.name}"] = render(overlay)
    return out


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: found {len(found)}"
    return found[0]


def config_of(objs: list[Obj]) -> dict[str, str]:
    return dict(one(objs, "ConfigMap", "maskwatch-config")["data"])


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
    for folder in [BASE, combo(tmp_path, ["hpa"]), *OVERLAYS]:
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
    objs = render(combo(tmp_path, ["hpa"]))
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
                    if obj["kind"] == "Job":
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
def test_references_resolve_in_every_overlay() -> None:
    for overlay in OVERLAYS:
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
def test_site_files_are_valid_site_files() -> None:
    from maskwatch.site import load_site

    files = [ROOT / "deploy" / "site.example.yaml"]
    for overlay in OVERLAYS:
        specs = [s for s in _kustomization(overlay).get("configMapGenerator", []) if s["name"] == "maskwatch-site"]
        assert len(specs) == 1, f"{overlay}: the producers mount ConfigMap maskwatch-site"
        files += [overlay / f for f in specs[0]["files"]]
    for f in files:
        site = load_site(str(f))
        assert site.cameras, f


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
