"""Where ppo-dr keeps its state on this machine, from the environment.

``PPO_DR_HOME``     state directory (default ``./.ppo-dr``): lab, Prefect DB, store
``PPO_DR_FLEET``    fleet file (default: the lab's ``fleet.yaml`` when a lab exists)
``PPO_DR_DB_URL``   state store URL (default: the fleet's ``store.url``, else SQLite in home)
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The state directory; created on first use."""
    path = Path(os.environ.get("PPO_DR_HOME", ".ppo-dr")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def lab_dir() -> Path:
    """Default directory of the embedded lab fleet."""
    return home() / "lab"


def fleet_file() -> Path:
    """The fleet file to use when none is named on the command line."""
    named = os.environ.get("PPO_DR_FLEET")
    if named:
        return Path(named).expanduser().resolve()
    return lab_dir() / "fleet.yaml"


def default_store_url() -> str:
    """SQLite file in the state directory; PPO_DR_DB_URL overrides."""
    return os.environ.get("PPO_DR_DB_URL") or f"sqlite:///{home() / 'ppo-dr.db'}"
