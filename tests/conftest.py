"""Run order for the whole suite (`make test` runs it on two workers, `pytest-xdist --dist loadfile`)."""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration files first, then the unit files, each file's tests in their own order (a stable sort): a worker
    takes the next file when it is nearly done with its last, so the long files start early and the many short ones
    fill in at the end, and the workers finish close together. Every worker collects the same order."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/unit/"))
