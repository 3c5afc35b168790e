"""One HA control plane (PostgreSQL, Redis, two API servers, services, HAProxy) for
the topology tests, started once (~30-60 s) and stopped at the end, whatever happened."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppo_dr.lab import controlplane

needs_binaries = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("haproxy")),
    reason="needs redis-server and haproxy (installed by .ci/run)",
)


def reachable_tempdir() -> Path:
    """A fresh directory the postgres user can reach (pytest's tmp_path is 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="ppo-dr-cp-"))
    directory.chmod(0o755)
    return directory


@pytest.fixture(scope="session")
def plane() -> Iterator[controlplane.ControlPlane]:
    directory = reachable_tempdir()
    try:
        started = controlplane.up(directory, echo=lambda _: None)
        yield started
    finally:
        if (directory / controlplane.STATE_FILE).exists():
            controlplane.down(directory, echo=lambda _: None)
        shutil.rmtree(directory, ignore_errors=True)
