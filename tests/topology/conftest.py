"""One HA control plane (PostgreSQL, Redis, two API servers, services, HAProxy) for
the topology tests, started once (~30-60 s) and stopped at the end, whatever happened."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deployments import distributed_lab
from deployments.distributed_lab import DistributedLab
from ppo_dr.lab import controlplane, netns
from ppo_dr.lab.supervisor import Lab

needs_binaries = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("haproxy")),
    reason="needs redis-server and haproxy (installed by .ci/run)",
)

needs_namespaces = pytest.mark.skipif(
    netns.unavailable_reason() is not None,
    reason=f"needs network namespaces ({netns.unavailable_reason()})",
)


def namespaced_lab_marks(timeout_s: int) -> list[pytest.MarkDecorator]:
    """The marks of a test of the whole namespaced lab: slow, and skipped without root
    or without the control plane's binaries."""
    return [
        pytest.mark.controlplane,
        pytest.mark.slow,
        pytest.mark.timeout(timeout_s),
        needs_binaries,
        needs_namespaces,
    ]


def reachable_tempdir() -> Path:
    """A fresh directory the postgres user can reach (pytest's tmp_path is 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="ppo-dr-cp-"))
    directory.chmod(0o755)
    return directory


@contextlib.contextmanager
def distributed(
    clients: int = 3, before_prefect: Callable[[Lab], None] | None = None
) -> Iterator[DistributedLab]:
    """``lab up --topology distributed --fast`` (small data) in a reachable directory;
    *before_prefect* edits the lab (its fleet file) before deploy and the workers.
    Everything is taken down and removed at the end, whatever happened."""
    directory = reachable_tempdir()
    try:
        lab = Lab(directory / "lab")
        distributed_lab.lab_up(
            lab, echo=lambda _: None, clients=clients, size_mb=2, fast=True, timeout=60.0
        )
        if before_prefect:
            before_prefect(lab)
        yield distributed_lab.start_prefect(lab, echo=lambda _: None)
    finally:
        distributed_lab.down(directory / "lab", echo=lambda _: None)
        shutil.rmtree(directory, ignore_errors=True)


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
