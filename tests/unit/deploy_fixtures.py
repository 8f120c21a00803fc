"""What the deploy tests render: deploy/k8s through a kustomize subset, docker-compose.yml through Compose, and
each container's environment and mounted files as its process would see them.

`kubectl kustomize` is not on a fresh CI machine (no Debian or PyPI package ships a current one), so the
kustomizations are rendered by `render()` below, a subset of kustomize covering exactly the fields deploy/k8s
uses (a kustomization using any other field fails loudly). Where a real kustomize is on PATH,
tests/unit/test_deploy_k8s.py checks that both render the same objects.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
# Files an overlay needs but git does not carry (real secrets): the test renders them from their example.
EXAMPLE_SUFFIX = ".example"

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
    "configurations",
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
GENERATED = "maskwatch.test/generated"  # marks a generated object until render() names it


class KustomizeSubsetError(ValueError):
    """A kustomization uses something render() does not implement."""


def load_docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def kustomization(folder: Path) -> Obj:
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


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as kustomize's `envs:` (and Compose's env files) read them."""
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


@dataclass
class _Build:
    """State of one render: which generated objects get a hash suffix, and extra name references."""

    hashed: dict[tuple[str, str], bool] = field(default_factory=dict)
    # kind of the referenced object -> (kind of the referring object, path of the name field)
    name_refs: dict[str, list[tuple[str, list[str]]]] = field(default_factory=dict)


def _generate(folder: Path, kind: str, spec: Obj, objs: list[Obj], build: _Build) -> None:
    """One generated ConfigMap or Secret, created, merged into or replacing the one generated below."""
    unknown = set(spec) - {"name", "files", "envs", "literals", "options", "behavior"}
    if unknown:
        raise KustomizeSubsetError(f"{folder}: generator fields {sorted(unknown)} are outside the subset")
    data: dict[str, str] = {}
    for entry in spec.get("files", []):
        key, _, rel = entry.rpartition("=") if "=" in entry else ("", "", entry)
        data[key or Path(rel).name] = (folder / rel).read_text(encoding="utf-8")
    for rel in spec.get("envs", []):
        data.update(env_file(folder / rel))
    for lit in spec.get("literals", []):
        key, _, value = lit.partition("=")
        data[key] = value
    if kind == "Secret":
        data = {k: _kustomize_base64(v) for k, v in data.items()}
    behavior = spec.get("behavior", "create")
    existing = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == spec["name"]]
    if behavior == "create":
        if existing:
            raise KustomizeSubsetError(f"{folder}: {kind}/{spec['name']} exists already: use behavior merge")
        obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"], GENERATED: True}}
        if kind == "Secret":
            obj["type"] = "Opaque"
        obj["data"] = data
        objs.append(obj)
    elif behavior in ("merge", "replace"):
        if len(existing) != 1 or not existing[0]["metadata"].get(GENERATED):
            raise KustomizeSubsetError(f"{folder}: behavior {behavior} needs one generated {kind}/{spec['name']}")
        existing[0]["data"] = {**existing[0]["data"], **data} if behavior == "merge" else data
    else:
        raise KustomizeSubsetError(f"{folder}: generator behavior {behavior!r}")
    key = (kind, spec["name"])
    build.hashed[key] = build.hashed.get(key, True) and not spec.get("options", {}).get("disableNameSuffixHash", False)


def _kustomize_base64(value: str) -> str:
    """base64 as kustomize writes a generated Secret's value: lines of 70, each ending in a newline, once the
    encoding reaches 70 characters (the content hash covers this form)."""
    encoded = base64.b64encode(value.encode()).decode()
    if len(encoded) // 70 + 1 == 1:
        return encoded
    return "".join(encoded[i : i + 70] + "\n" for i in range(0, len(encoded), 70))


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


def pod_specs(obj: Obj) -> Iterator[Obj]:
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield spec["template"]["spec"]
    elif obj["kind"] == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]
    elif obj["kind"] == "Pod":
        yield spec


def pod_template(obj: Obj) -> Obj:
    """The pod template (metadata and spec) of a workload."""
    if obj["kind"] == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"])
    return dict(obj["spec"]["template"])


def containers(obj: Obj) -> Iterator[Obj]:
    for pod in pod_specs(obj):
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


def _walk_names(node: Any, path: list[str], rename: Any) -> None:
    """Apply `rename` to the string at `path` under node, descending into every item of a list on the way."""
    if isinstance(node, list):
        for item in node:
            _walk_names(item, path, rename)
        return
    if not isinstance(node, dict) or not path or path[0] not in node:
        return
    if len(path) == 1:
        if isinstance(node[path[0]], str):
            node[path[0]] = rename(node[path[0]])
        return
    _walk_names(node[path[0]], path[1:], rename)


def _rename_refs(objs: list[Obj], renames: dict[tuple[str, str], str], build: _Build) -> None:
    """Point references to generated ConfigMaps and Secrets at their hashed names (kustomize's nameReference)."""

    def new(kind: str, name: str) -> str:
        return renames.get((kind, name), name)

    for obj in objs:
        for pod in pod_specs(obj):
            for vol in pod.get("volumes", []):
                if "configMap" in vol:
                    vol["configMap"]["name"] = new("ConfigMap", vol["configMap"]["name"])
                if "secret" in vol:
                    vol["secret"]["secretName"] = new("Secret", vol["secret"]["secretName"])
                for src in vol.get("projected", {}).get("sources", []):
                    if "configMap" in src:
                        src["configMap"]["name"] = new("ConfigMap", src["configMap"]["name"])
                    if "secret" in src:
                        src["secret"]["name"] = new("Secret", src["secret"]["name"])
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
        for kind, specs in build.name_refs.items():
            for referrer, path in specs:
                if obj["kind"] == referrer:
                    _walk_names(obj, path, lambda name, kind=kind: new(kind, name))


def _configurations(folder: Path, k: Obj, build: _Build) -> None:
    """`configurations:` files; only their nameReference entries (custom resources naming a Secret) are in the subset."""
    for rel in k.get("configurations", []):
        conf = yaml.safe_load((folder / rel).read_text(encoding="utf-8"))
        if set(conf) != {"nameReference"}:
            raise KustomizeSubsetError(f"{folder}/{rel}: only nameReference is in the subset")
        for ref in conf["nameReference"]:
            for spec in ref["fieldSpecs"]:
                build.name_refs.setdefault(ref["kind"], []).append((spec["kind"], spec["path"].split("/")))


def _apply(folder: Path, k: Obj, objs: list[Obj], build: _Build) -> list[Obj]:
    """Generators, then transformers in kustomize's order: patches, namespace, replicas, images."""
    _configurations(folder, k, build)
    for gen_field, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
        for spec in k.get(gen_field, []):
            _generate(folder, kind, spec, objs, build)
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
            for c in containers(obj):
                name, tag, digest = _split_image(c["image"])
                if name != entry["name"]:
                    continue
                name = entry.get("newName", name)
                tag = entry.get("newTag", tag)
                digest = entry.get("digest", digest)
                c["image"] = name + (f":{tag}" if tag and not digest else "") + (f"@{digest}" if digest else "")
    return objs


def _build(folder: Path, build: _Build, component: bool = False) -> list[Obj]:
    k = kustomization(folder)
    expected = "Component" if component else "Kustomization"
    if k.get("kind", "Kustomization") != expected:
        raise KustomizeSubsetError(f"{folder}: expected kind {expected}, found {k.get('kind')}")
    objs: list[Obj] = []
    for res in k.get("resources", []):
        path = (folder / res).resolve()
        objs.extend(_build(path, build) if path.is_dir() else load_docs(path))
    for comp in k.get("components", []):
        objs = _apply_component((folder / comp).resolve(), objs, build)
    return _apply(folder, k, objs, build)


def _apply_component(folder: Path, objs: list[Obj], build: _Build) -> list[Obj]:
    k = kustomization(folder)
    if k.get("kind") != "Component":
        raise KustomizeSubsetError(f"{folder}: a component must be kind Component")
    for res in k.get("resources", []):
        objs.extend(load_docs(folder / res))
    return _apply(folder, k, objs, build)


def render(folder: Path) -> list[Obj]:
    """What `kustomize build folder` prints, as objects (for the subset deploy/k8s uses)."""
    build = _Build()
    objs = _build(folder.resolve(), build)
    seen: set[tuple[str, str]] = set()
    for obj in objs:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in seen:
            raise KustomizeSubsetError(f"may not add resource with an already registered id: {key[0]}/{key[1]}")
        seen.add(key)
    renames: dict[tuple[str, str], str] = {}
    for obj in objs:
        if obj["metadata"].pop(GENERATED, False) and build.hashed[(obj["kind"], obj["metadata"]["name"])]:
            hashed_name = f"{obj['metadata']['name']}-{kustomize_hash(obj)}"
            renames[(obj["kind"], obj["metadata"]["name"])] = hashed_name
            obj["metadata"]["name"] = hashed_name
    _rename_refs(objs, renames, build)
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


def prepared_k8s(tmp: Path) -> Path:
    """A copy of deploy/k8s where each file git leaves out (`secrets.env`) is its committed example."""
    copy_root = tmp / "k8s"
    if not copy_root.exists():
        shutil.copytree(K8S, copy_root)
        for example in copy_root.rglob(f"*{EXAMPLE_SUFFIX}"):
            real = example.with_name(example.name.removesuffix(EXAMPLE_SUFFIX))
            if not real.exists():
                shutil.copyfile(example, real)
    return copy_root


def combo(k8s: Path, tmp: Path, components: list[str]) -> Path:
    """A throwaway kustomization: the base plus the named components."""
    folder = tmp / ("with-" + "-".join(components))
    folder.mkdir(exist_ok=True)
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(k8s / "base", folder)],
                "components": [os.path.relpath(k8s / "components" / c, folder) for c in components],
            }
        )
    )
    return folder


def overlays(k8s: Path) -> list[Path]:
    return sorted(p for p in (k8s / "overlays").iterdir() if p.is_dir())


def components(k8s: Path) -> list[str]:
    return sorted(p.name for p in (k8s / "components").iterdir() if p.is_dir())


def renders(tmp: Path) -> dict[str, list[Obj]]:
    """Every rendering that must be valid: the base alone, with each component, and every overlay."""
    k8s = prepared_k8s(tmp)
    out = {"base": render(k8s / "base")}
    for comp in components(k8s):
        out[f"base+{comp}"] = render(combo(k8s, tmp, [comp]))
    for overlay in overlays(k8s):
        out[f"overlays/{overlay.name}"] = render(overlay)
    return out


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(obj: Obj, name: str) -> bool:
    """Whether obj is `name`, or a generated `name` with kustomize's hash suffix."""
    actual = obj["metadata"]["name"]
    if obj["kind"] in ("ConfigMap", "Secret"):
        return bool(re.fullmatch(re.escape(name) + r"(-[a-z0-9]{10})?", actual))
    return bool(actual == name)


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and named(o, name)]
    assert len(found) == 1, f"{kind}/{name}: found {len(found)}"
    return found[0]


def config_of(objs: list[Obj]) -> dict[str, str]:
    return dict(one(objs, "ConfigMap", "maskwatch-config")["data"])


# ---- a container as its process sees it --------------------------------------------------------------------


class MissingReference(AssertionError):
    """A container names a ConfigMap, Secret or key that the rendering does not hold (the pod would not start)."""


@dataclass
class ContainerView:
    """One container: its command line, environment and mounted files as the kubelet or Compose hands them over."""

    where: str
    image: str
    args: list[str]
    env: dict[str, str]
    files: dict[str, str]  # absolute path in the container -> content
    probes: dict[str, list[str]]  # probe name -> exec command

    @property
    def image_name(self) -> str:
        """The image's last path part without tag or digest: worker, producer, dashboard, serving, kafka..."""
        return _split_image(self.image)[0].rsplit("/", 1)[-1]

    def localized(self, tmp: Path) -> tuple[list[str], dict[str, str]]:
        """args and env with every mounted path replaced by a copy of the file under tmp."""
        mapping: dict[str, str] = {}
        for path, content in self.files.items():
            local = tmp / path.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(content, encoding="utf-8")
            mapping[path] = str(local)

        def swap(value: str) -> str:
            return mapping.get(value, value)

        return [swap(a) for a in self.args], {k: swap(v) for k, v in self.env.items()}


def _data(obj: Obj) -> dict[str, str]:
    data = obj.get("data", {})
    if obj["kind"] == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in data.items()}
    return dict(data)


def _source(objs: list[Obj], kind: str, name: str) -> Obj | None:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return found[0] if found else None


FIELD_VALUES = {"metadata.name": "maskwatch-pod-0", "metadata.namespace": "maskwatch", "status.podIP": "10.0.0.7"}


def k8s_containers(objs: list[Obj], label: str) -> list[ContainerView]:
    """Every container of every workload, with env (envFrom, then env, later wins) and files resolved."""
    views = []
    for obj in objs:
        for pod in pod_specs(obj):
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for c in list(pod.get("initContainers", [])) + list(pod["containers"]):
                where = f"{label}: {obj['kind']}/{obj['metadata']['name']} container {c['name']}"
                env: dict[str, str] = {}
                for src in c.get("envFrom", []):
                    for kind, ref_field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                        if ref_field not in src:
                            continue
                        ref = src[ref_field]
                        found = _source(objs, kind, ref["name"])
                        if found is None:
                            if ref.get("optional"):
                                continue
                            raise MissingReference(f"{where}: envFrom {kind}/{ref['name']}")
                        prefix = src.get("prefix", "")
                        env.update({prefix + k: v for k, v in _data(found).items()})
                for e in c.get("env", []):
                    if "value" in e:
                        env[e["name"]] = str(e["value"])
                        continue
                    vf = e.get("valueFrom", {})
                    if "fieldRef" in vf:
                        env[e["name"]] = FIELD_VALUES[vf["fieldRef"]["fieldPath"]]
                        continue
                    for kind, ref_field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                        if ref_field not in vf:
                            continue
                        ref = vf[ref_field]
                        found = _source(objs, kind, ref["name"])
                        if found is None or ref["key"] not in _data(found):
                            if ref.get("optional"):
                                continue
                            raise MissingReference(f"{where}: env {e['name']} from {kind}/{ref['name']}:{ref['key']}")
                        env[e["name"]] = _data(found)[ref["key"]]
                    if "value" not in e and not vf:
                        env[e["name"]] = ""
                files: dict[str, str] = {}
                for mount in c.get("volumeMounts", []):
                    vol = volumes[mount["name"]]
                    for kind, key, name_key in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
                        if key not in vol:
                            continue
                        found = _source(objs, kind, vol[key][name_key])
                        if found is None:
                            if vol[key].get("optional"):
                                continue
                            raise MissingReference(f"{where}: volume {mount['name']} from {kind}/{vol[key][name_key]}")
                        data = _data(found)
                        items = vol[key].get("items") or [{"key": k, "path": k} for k in data]
                        for item in items:
                            path = mount["mountPath"].rstrip("/") + "/" + item["path"]
                            if "subPath" in mount:
                                if mount["subPath"] != item["path"]:
                                    continue
                                path = mount["mountPath"]
                            files[path] = data[item["key"]]
                probes = {
                    p: list(c[p]["exec"]["command"])
                    for p in ("startupProbe", "readinessProbe", "livenessProbe")
                    if "exec" in c.get(p, {})
                }
                args = [*c.get("command", []), *c.get("args", [])]
                views.append(ContainerView(where, c["image"], args, env, files, probes))
    return views


# ---- Compose -----------------------------------------------------------------------------------------------


def compose_cmd() -> list[str]:
    """Compose v1 (Debian's docker-compose package) or the v2 plugin; fails the test when neither exists."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    pytest.fail(
        "neither docker-compose nor `docker compose` is installed: `apt-get install docker-compose` (Debian package)"
    )


def compose(env_file_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run compose on docker-compose.yml with a clean environment: no MW_* or COMPOSE_* from the caller, and
    `env_file_path` instead of a developer's .env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MW_", "COMPOSE_"))}
    cmd = [*compose_cmd(), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(env_file_path)]
    return subprocess.run([*cmd, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def compose_config(env_file_path: Path) -> dict[str, Any]:
    """`compose config`: the file as Compose understands it, variables resolved."""
    out = compose(env_file_path, "config")
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    assert isinstance(doc, dict)
    return doc


def mounts(svc: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """target -> (source, read-only) of a resolved service; short ("src:dst:ro", Compose v1) or long (v2) syntax."""
    out = {}
    for v in svc.get("volumes", []):
        if isinstance(v, str):
            src, _, rest = v.partition(":")
            target, _, mode = rest.partition(":")
            out[target] = (src, mode == "ro")
        else:
            out[v["target"]] = (v.get("source", ""), bool(v.get("read_only")))
    return out


def compose_containers(resolved: dict[str, Any]) -> list[ContainerView]:
    """Every service built from deploy/Dockerfile, with its environment and its bind-mounted files."""
    views = []
    for name, svc in resolved["services"].items():
        env_raw = svc.get("environment") or {}
        if isinstance(env_raw, list):
            env_raw = dict(e.partition("=")[::2] for e in env_raw)
        # `KEY:` with no value passes the caller's variable through; compose runs here with none set
        env = {k: str(v) for k, v in env_raw.items() if v is not None}
        files = {}
        for target, (src, _) in mounts(svc).items():
            if src.startswith("/") and Path(src).is_file():
                files[target] = Path(src).read_text(encoding="utf-8")
        for ref in svc.get("secrets", []):
            source = ref if isinstance(ref, str) else ref["source"]
            target = source if isinstance(ref, str) else ref.get("target", source)
            path = target if target.startswith("/") else f"/run/secrets/{target}"
            files[path] = Path(resolved["secrets"][source]["file"]).read_text(encoding="utf-8")
        probes = {}
        test = svc.get("healthcheck", {}).get("test")
        if isinstance(test, list) and test and test[0] == "CMD":
            probes["healthcheck"] = list(test[1:])
        args = [str(a) for a in (svc.get("command") or [])]
        image = str(svc.get("image", ""))
        target = svc.get("build", {}).get("target", "")
        views.append(ContainerView(f"compose: {name} ({target or image})", image, args, env, files, probes))
    return views


def batching(path: Path) -> dict[str, int]:
    """The `name { value: N }` fields of a BatchingParameters text proto."""
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s*\{\s*value:\s*(\d+)\s*\}", path.read_text(), re.M)}


# A model run's memory per frame (TensorFlow, 640x480 frames: peak RSS 1,200 MB for one Predict of 8 frames, 2,376 MB
# for 64; `python -m bench.security frames --runtime tensorflow --size 640x480 -n 1 --per-request K`, 2026-12-07) and
# the server's RSS once the model is loaded (1,062 MB), rounded up.
MB_PER_BATCH_FRAME = 21
MB_LOADED = 1_100


def largest_batches_mb(cfg: dict[str, int]) -> int:
    """The model server's memory with every batch thread running a batch of max_batch_size frames."""
    return MB_LOADED + cfg["num_batch_threads"] * cfg["max_batch_size"] * MB_PER_BATCH_FRAME
