"""Where ppo-dr keeps its state on this machine, from the environment.

``PPO_DR_HOME``     state directory (default ``./.ppo-dr``): lab, Prefect DB, store
``PPO_DR_FLEET``    fleet file (default: the lab's ``fleet.yaml`` when a lab exists)
``PPO_DR_DB_URL``   state store URL (default: the fleet's ``store.url``, else SQLite in home)
``PPO_DR_STORE_PATIENCE_S``  how long a store call waits for a PostgreSQL that refuses
                    connections (restarting, failing over) before it fails; default 0
                    (fail at once, as an operator's command should), and what
                    ``ppo-dr serve`` and ``ppo-dr worker`` give the runbooks they run
"""

from __future__ import annotations

import os
from pathlib import Path

from ppo_dr.errors import PermanentError

STORE_PATIENCE_ENV = "PPO_DR_STORE_PATIENCE_S"
#: What ``ppo-dr serve`` and ``ppo-dr worker`` give the runs they start, unless the
#: operator set it: a restart or a failover of the database takes seconds to a minute,
#: which a step rides out instead of failing (the chaos suite's ``store-restart`` keeps
#: it away 30 s). Operators' commands keep the default, 0, and fail at once.
RUNBOOK_STORE_PATIENCE_S = 60


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


def store_patience_s() -> float:
    """``$PPO_DR_STORE_PATIENCE_S`` in seconds (0 when unset); a bad value names the variable."""
    text = os.environ.get(STORE_PATIENCE_ENV, "").strip()
    if not text:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise PermanentError(f"${STORE_PATIENCE_ENV}={text!r}: seconds from 0 to 3600")
    return seconds
