"""Where the mirror tests keep this machine's index copies: a folder of the test's own,
or none at all."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The kept index files and the merged index go here (``$PPO_DR_INDEX_CACHE``)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("PPO_DR_INDEX_CACHE", str(path))
    return path


@pytest.fixture
def index_cache_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No copies kept (``PPO_DR_INDEX_CACHE=off``), and a home of the test's own, so
    nothing falls back to a cache elsewhere."""
    monkeypatch.setenv("PPO_DR_INDEX_CACHE", "off")
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
