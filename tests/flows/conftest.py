"""Fixtures of the runbook tests: a fresh state store per test, the session lab's fleet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.store import Store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A fresh store for this test (``PPO_DR_DB_URL``), and a state directory of its own."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("PPO_DR_DB_URL", url)
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    with Store(url) as opened:
        opened.upgrade()
        yield opened


@pytest.fixture(scope="module")
def fleet(lab: Lab) -> Fleet:
    return load_fleet(lab.fleet_file)
