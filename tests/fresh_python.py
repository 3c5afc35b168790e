"""Run a snippet in a fresh interpreter, for tests that must not share pytest's process.

What a snippet imports, the hash seed it runs under, or the Prefect client it starts
stays in its own process; the test reads what it printed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run_python(
    code: str,
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """What ``python -c code`` printed; the test fails with its stderr's tail if it failed."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
