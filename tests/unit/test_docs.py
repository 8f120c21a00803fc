"""README, docs/ and every other Markdown file point only inside the repository, and every path they name exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tracked_files() -> list[str]:
    """The repository's files: git's list, or (a tree without .git) every file outside ignored build folders."""
    try:
        return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", ".git", "node_modules", "vendor", "models", "__pycache__", ".maskwatch"}
        return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


TRACKED = tracked_files()
DOCS = [ROOT / f for f in TRACKED if f.endswith(".md")]
# A backticked path: names, slashes and dots only (no spaces, placeholders like {id} or <version>, globs).
PATH_RE = re.compile(r"^[A-Za-z0-9_.+-]+(?:/[A-Za-z0-9_.+-]+)*/?$")
FILE_SUFFIXES = (".py", ".md", ".html", ".yaml", ".yml", ".json", ".txt", ".toml", ".config", ".sh", ".js", ".css")
# Made by `make setup` or at run time, not in a clone.
GENERATED = ("models/", ".venv/", ".maskwatch/", "bench/results/", "dashboard/static/vendor/", "dashboard/node_modules/")


def tracked_top_dirs() -> set[str]:
    return {f.split("/", 1)[0] for f in TRACKED if "/" in f}


def backticked(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def looks_like_path(token: str) -> bool:
    return bool(PATH_RE.match(token)) and (token.endswith("/") or token.endswith(FILE_SUFFIXES))


def map_rows() -> list[tuple[str, str]]:
    """README's "Start reading here" table as (path cell, owns cell)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Start reading here", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 2 and cells[0] not in ("path", "---"):
            rows.append((cells[0], cells[1]))
    return rows


def test_the_reading_map_names_only_paths_that_exist() -> None:
    rows = map_rows()
    assert len(rows) >= 10, "README keeps a 'Start reading here' map"
    missing = []
    for paths, owns in rows:
        named = [t for t in backticked(paths) if PATH_RE.match(t)]
        assert named, f"a map row names its folder or files: {paths}"
        first = ROOT / named[0]
        base = first if first.is_dir() else first.parent
        for token in named:  # the path column: from the root, or beside the row's first path
            if not ((ROOT / token).exists() or (base / token).exists()):
                missing.append(f"{paths}: {token}")
        for token in filter(looks_like_path, backticked(owns)):  # files named in what the row owns
            if not ((ROOT / token).exists() or (base / token).exists() or token.startswith(GENERATED)):
                missing.append(f"{paths} owns {token}")
    assert not missing, missing


def test_every_top_level_folder_is_on_the_map() -> None:
    on_map = {t.split("/", 1)[0] for paths, _ in map_rows() for t in backticked(paths)}
    assert not (tracked_top_dirs() - {".ci"}) - on_map


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_backticked_repository_paths_exist(doc: Path) -> None:
    tops = tracked_top_dirs() | {"README.md", "Makefile", "pyproject.toml", "docker-compose.yml"}
    missing = [
        token
        for token in backticked(doc.read_text(encoding="utf-8"))
        if looks_like_path(token) and token.split("/", 1)[0] in tops and not token.startswith(GENERATED)
        and not (ROOT / token).exists()
    ]
    assert not missing, f"{doc.name} names paths that are not in the repository: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_inside_the_repository(doc: Path) -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8"))
    outside = []
    for link in links:
        if re.match(r"^[a-z]+:", link) or link.startswith("#"):
            continue  # a web address or an anchor
        target = (doc.parent / link.split("#", 1)[0]).resolve()
        if not target.is_relative_to(ROOT) or not target.exists():
            outside.append(link)
    assert not outside, f"{doc.name} links outside the repository or to nothing: {outside}"


def test_readme_points_to_the_design_document() -> None:
    assert "](docs/DESIGN.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
