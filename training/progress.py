"""Per-epoch figures kept beside a stage's checkpoints, so a resumed run that has nothing left to train still
reports its last epoch's losses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIGURES_FILE = "figures.json"


def save_figures(checkpoint_dir: Path, epoch: int, figures: dict[str, Any]) -> None:
    (checkpoint_dir / FIGURES_FILE).write_text(json.dumps({"epoch": epoch, **figures}), encoding="utf-8")


def last_figures(checkpoint_dir: Path) -> dict[str, Any]:
    """The figures of the last epoch trained into `checkpoint_dir`; {} before the first."""
    path = checkpoint_dir / FIGURES_FILE
    if not path.is_file():
        return {}
    figures: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    figures.pop("epoch", None)
    return figures
