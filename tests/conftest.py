"""Fixtures shared by the whole suite: the embedded lab fleet.

``lab`` is one small lab for the session (6 clients, 12 MiB of data, fast timings) in
a temporary directory; ``down()`` always runs at teardown, so no process outlives the
tests. Tests that inject faults must heal them before they end (``healed_lab`` checks
that and heals whatever was left). Every test using these fixtures is marked ``lab``
automatically, so ``pytest -m "not lab"`` runs without starting processes.

Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) every worker starts the
session fixtures it needs; the control plane is too heavy to start twice, so the tests
using it share one worker, and so do the tests of a module with a module-scoped fixture
(one lab or server per module, warm after its first test, as its author meant). Slow
tests are collected first: their long waits then overlap the rest of the run instead of
ending it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppo_dr.lab.supervisor import Lab

# Fixtures that live in their own modules: a real Prefect API, a real OpenSSH sshd.
pytest_plugins = ["tests.prefect_fixtures", "tests.sshd", "tests.s3", "tests.aws"]

LAB_CLIENTS = 6
LAB_SIZE_MB = 12
LAB_FIXTURES = {"lab", "healed_lab"}
#: Session fixtures started once per run, not once per xdist worker: fixture -> group.
ONE_WORKER_FIXTURES = {"plane": "controlplane"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if LAB_FIXTURES & fixtures:
            item.add_marker(pytest.mark.lab)
        group = worker_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable


def worker_group(item: pytest.Item) -> str | None:
    """The xdist group *item* must share a worker with, if any (see the module doc)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    scopes = {name: defs[-1].scope for name, defs in info.name2fixturedefs.items() if defs}
    for fixture, group in ONE_WORKER_FIXTURES.items():
        if fixture in scopes:
            return group
    if "module" in scopes.values():
        return item.nodeid.split("::")[0]
    return None


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A running lab: 10 servers in 3 DCs, netsim, front door, workload; down at the end."""
    lab = Lab(Path(tmp_path_factory.mktemp("lab")) / "lab")
    try:
        lab.up(clients=LAB_CLIENTS, size_mb=LAB_SIZE_MB, fast=True, timeout=30.0)
        yield lab
    finally:
        lab.down()


@pytest.fixture
def healed_lab(lab: Lab) -> Iterator[Lab]:
    """The session lab for a test that breaks it: whatever it leaves broken is healed."""
    yield lab
    for target in ("jhb1", "cpt1", "lon1"):
        lab.heal(target)


@pytest.fixture(autouse=True)
def no_leaked_slots(request: pytest.FixtureRequest) -> None:
    """Free every runbook slot left taken on the session's test harness before a test.

    The harness is an ephemeral server: it runs no lease reaper, so a run that an
    earlier test's teardown stopped mid-run (a served escalation's auto-failover, a
    mirror of a new home, a killed orchestrator) keeps its ``failover`` or
    ``mirror-server-<id>`` slot there forever, and the next run of that kind waits or is
    skipped. A real server frees such a slot when its lease expires (~75 s;
    tests/flows/test_failover.py pins that on a real server). Between two tests no run
    is meant to hold a slot, so every taken slot is a leak.
    """
    if "prefect_api" not in request.fixturenames:
        return
    request.getfixturevalue("prefect_api")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    with get_client(sync_client=True) as client:
        for limit in client.read_global_concurrency_limits(limit=200):
            if limit.active_slots:
                client.update_global_concurrency_limit(
                    limit.name, GlobalConcurrencyLimitUpdate(active_slots=0)
                )


@pytest.fixture(autouse=True, scope="session")
def _lab_ports(worker_id: str) -> Iterator[None]:
    """Each xdist worker's labs pick ports from a slice of their own
    (``PPO_DR_LAB_PORTS``): a port of a server one test powered off is free to bind,
    and a lab started meanwhile by the other worker once took it (CI, stop 23)."""
    from ppo_dr.lab import topology

    low, high = topology.lab_port_range()
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker_id.removeprefix("gw")) if worker_id.startswith("gw") else 0
    width = (high - low + 1) // max(workers, 1)
    first = low + index * width
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(topology.PORTS_VARIABLE, f"{first}-{first + width - 1}")
        yield


@pytest.fixture(autouse=True, scope="session")
def _index_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test session keeps its repositories' index files in a directory of its own
    (``ppo_dr.mirror.index_cache``), not in the checkout's ``.ppo-dr``; subprocesses
    that inherit the environment use it too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PPO_DR_INDEX_CACHE", str(tmp_path_factory.mktemp("index-cache")))
        yield
