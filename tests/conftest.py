"""The order of the suite: files marked `slow` (minutes each) first, the rest as collected.

`make test` runs the suite in several processes, each test file whole in one of them, handed out in this order
(`--dist loadfile --no-loadscope-reorder`): the files that take minutes start at once, and the many short ones fill
the processes in after them, instead of one long file running alone at the end."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # a stable sort: otherwise as collected
