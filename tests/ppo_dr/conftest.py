"""Fixtures of the domain's tests: a migrated SQLite store of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ppo_dr.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store at head in the test's directory (a module may define its own)."""
    with Store(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        opened.upgrade()
        yield opened
