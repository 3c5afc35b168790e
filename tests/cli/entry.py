"""The ``ppo-dr`` command as an argv, from the entry point ``pyproject.toml`` declares.

Subprocess tests run it as the console script would (import ``module``, call
``function``), so they test the declared entry point without depending on the script
in the venv, which is only as new as the last ``pip install``.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def entry_point() -> tuple[str, str]:
    """``(module, function)`` of the ``ppo-dr`` script in ``pyproject.toml``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    module, _, function = project["scripts"]["ppo-dr"].partition(":")
    return module, function


def ppo_dr_argv() -> list[str]:
    """What to run for ``ppo-dr``: this Python, calling the declared entry point."""
    module, function = entry_point()
    code = f"import sys; from {module} import {function}; sys.argv[0] = 'ppo-dr'; {function}()"
    return [sys.executable, "-c", code]


PPO_DR = ppo_dr_argv()
