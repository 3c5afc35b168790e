"""A failover survives the control plane losing a part mid-run (slow: minutes each).

One HA control plane, one loopback lab and three workers (two on ``control``, one on
``dc-cpt1``) are shared by the module; each test starts a ``failover`` run of two jhb1
clients into cpt1 from the deployment, waits until a client's move is running on the
cpt1 worker, then loses one thing: an API server (SIGKILL, restarted afterwards),
PostgreSQL (an immediate stop, as after a power loss, restarted at once), Redis
(SIGKILL; it comes back empty), or the control worker running the orchestrator
together with the orchestrator's process (a host's power loss). Each time the run
completes (by itself, or rerun by the automations ``ppo-dr deploy`` creates), every
client is moved by exactly one ``fail-over-clients`` run and switched exactly once,
and the incident is the one there was. The figures are printed (``-s``) for
docs/deploy.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deployments.automations import ensure_run_recovery_automations
from deployments.deploy import ensure_work_pools
from deployments.registry import CONTROL_POOL, distributed_deployments
from deployments.workers import start_worker
from flows.mirror_schedule import dc_pool
from ppo_dr.inventory import load_fleet
from ppo_dr.lab import controlplane
from ppo_dr.lab.controlplane_restart import restart
from ppo_dr.lab.supervisor import Lab
from ppo_dr.store import Store
from tasks.escalation import FAILOVER_DEPLOYMENT
from tests.labs import own_lab
from tests.prefect_fixtures import isolated_env, using_api
from tests.topology.conftest import needs_binaries, reachable_tempdir
from tests.topology.test_routing import _stop

pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.xdist_group("restarts-mid-failover"),
    needs_binaries,
]

TARGET_DC = "cpt1"
#: Longest a failover may take after the loss (a zombie is noticed in 90-120 s).
COMPLETE_WITHIN_S = 600.0


@dataclass
class Stack:
    """What the module shares: the control plane, the lab, the workers by name."""

    plane: controlplane.ControlPlane
    lab: Lab
    workers: dict[str, subprocess.Popen[bytes]]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    directory = reachable_tempdir()
    saved = {k: os.environ.get(k) for k in ("PPO_DR_HOME", "PPO_DR_DB_URL", "PPO_DR_FLEET")}
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        os.environ["PPO_DR_HOME"] = str(directory / "home")
        os.environ.pop("PPO_DR_DB_URL", None)
        plane = controlplane.up(directory / "cp", echo=lambda _: None)
        with own_lab(directory / "lab", clients=16, size_mb=2, settle_s=1.0) as lab:
            os.environ["PPO_DR_FLEET"] = str(lab.fleet_file)
            fleet = load_fleet(lab.fleet_file)
            wanted = {"failover", f"into-{TARGET_DC}"}
            with using_api(plane.api_url):
                ensure_work_pools([CONTROL_POOL, dc_pool(TARGET_DC)])
                for routed in distributed_deployments(fleet):
                    if routed.deployment.name in wanted:
                        routed.deployment.apply(work_pool_name=routed.pool)
                ensure_run_recovery_automations(echo=lambda _: None)
            env = isolated_env(PPO_DR_HOME=str(directory / "worker-home"))
            for pool, name in (
                (CONTROL_POOL, "control@a"),
                (CONTROL_POOL, "control@b"),
                (dc_pool(TARGET_DC), f"dc-{TARGET_DC}@{TARGET_DC}"),
            ):
                workers[name] = start_worker(
                    pool, name=name, api_url=plane.api_url, base_env=env,
                    log=directory / f"{name}.log",
                )  # fmt: skip
            yield Stack(plane, lab, workers)
    finally:
        for proc in workers.values():
            if proc.poll() is None:  # the power-loss test killed one already
                _stop(proc)
        if (directory / "cp" / controlplane.STATE_FILE).exists():
            controlplane.down(directory / "cp", echo=lambda _: None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        subprocess.run(["rm", "-rf", str(directory)], check=False)


def _flow_runs(api_url: str, flow_name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with using_api(api_url), get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), limit=200
        )


def _read_run(api_url: str, run_id: uuid.UUID) -> Any:
    from prefect.client.orchestration import get_client

    with using_api(api_url), get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def _crash_message(api_url: str, run_id: uuid.UUID) -> str:
    """The message of the run's Crashed state (who crashed it, and why)."""
    from prefect.client.orchestration import get_client

    with using_api(api_url), get_client(sync_client=True) as client:
        states = client.read_flow_run_states(run_id)
    return " | ".join(str(s.message) for s in states if s.is_crashed())


def _until(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    """Poll *check* (errors count as "not yet": the API may be the thing we broke)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            found = check()
        except Exception as exc:  # the API or the store is coming back
            last = exc
        else:
            if found:
                return found
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last error: {last!r})")


@dataclass
class Started:
    run_id: uuid.UUID
    clients: list[str]
    incident_id: int
    versions: dict[str, int]


def _start_failover(stack: Stack) -> Started:
    """A failover of the next two clients still on jhb1 into cpt1, for an incident."""
    from prefect.deployments import run_deployment

    fleet = load_fleet(stack.lab.fleet_file)
    with Store.open(stack.lab.store_url) as store:
        on_jhb1 = sorted(
            p.client_id for p in store.placements() if fleet.server(p.server_id).dc == "jhb1"
        )
        clients = on_jhb1[:2]
        assert len(clients) == 2, on_jhb1
        versions = {c: store.placement(c).version for c in clients}  # type: ignore[union-attr]
        incident, created = store.open_incident(
            "outage", f"restart-test-{uuid.uuid4().hex[:8]}", f"test: move {clients}",
            {"clients": clients}, paging=False,
        )  # fmt: skip
        assert created
    with using_api(stack.plane.api_url):
        run = run_deployment(
            FAILOVER_DEPLOYMENT,
            parameters={
                "clients": clients,
                "to_dc": TARGET_DC,
                "approve": True,
                "incident_id": incident.id,
                "fleet_file": str(stack.lab.fleet_file),
            },
            timeout=0,
        )
    return Started(run.id, clients, incident.id, versions)  # type: ignore[union-attr]


def _client_runs(api_url: str, started: Started) -> list[Any]:
    return [
        r
        for r in _flow_runs(api_url, "fail-over-clients")
        if r.parameters.get("failover_run_id") == str(started.run_id)
    ]


def _wait_mid_failover(stack: Stack, started: Started) -> None:
    """Until a client's move runs on the cpt1 worker: the failover is half-way."""

    def running() -> bool:
        runs = _client_runs(stack.plane.api_url, started)
        return any(r.state is not None and r.state.is_running() for r in runs)

    _until("a client run running", running, 600, every=0.5)


def _wait_completed(stack: Stack, started: Started) -> Any:
    def final() -> Any:
        run = _read_run(stack.plane.api_url, started.run_id)
        return run if run.state is not None and run.state.is_final() else None

    run = _until("the failover run final", final, COMPLETE_WITHIN_S, every=2.0)
    assert run.state.is_completed(), (run.state.name, run.state.message)
    return run


def _check_nothing_twice(stack: Stack, started: Started) -> None:
    """One client run per client, Completed; one switch per client; one incident."""
    runs = _client_runs(stack.plane.api_url, started)
    by_client: dict[str, list[Any]] = {}
    for run in runs:
        for move in run.parameters["moves"]:
            by_client.setdefault(move["client_id"], []).append(run)
    assert sorted(by_client) == started.clients, by_client
    for client, mine in by_client.items():
        assert len(mine) == 1, (client, [r.name for r in mine])
        assert mine[0].state.is_completed(), (client, mine[0].state)
    fleet = load_fleet(stack.lab.fleet_file)
    with Store.open(stack.lab.store_url) as store:
        (failover,) = store.failovers(incident_id=started.incident_id)
        results = {r.client_id: r for r in store.failover_results(failover.plan_id)}
        for client in started.clients:
            placed = store.placement(client)
            assert placed is not None
            assert fleet.server(placed.server_id).dc == TARGET_DC, (client, placed)
            assert placed.version == started.versions[client] + 1, (client, placed.version)
            assert results[client].outcome == "ok", results[client]
            restore = [
                s for s in store.failover_steps(failover.plan_id, client) if s.step == "restore"
            ]
            assert [s.state for s in restore] == ["done"], restore
            print(f"  {client}: restore began {restore[0].attempts} time(s)")
        mine = [i for i in store.incidents() if i.scope.get("clients") == started.clients]
        assert [i.id for i in mine] == [started.incident_id]


def _report(case: str, lost_at: float, started: Started, stack: Stack, **more: float) -> None:
    took = time.monotonic() - lost_at
    load = os.getloadavg()[0]
    extra = "".join(f", {k} {v:.1f} s" for k, v in more.items())
    print(f"\nRESTART {case}: loss -> failover Completed {took:.1f} s{extra} (load {load:.1f})")
    _check_nothing_twice(stack, started)


def test_api_server_killed_mid_failover(stack: Stack) -> None:
    started = _start_failover(stack)
    _wait_mid_failover(stack, started)
    lost_at = time.monotonic()
    controlplane.kill(Path(stack.plane.directory), "api-1")
    _wait_completed(stack, started)
    _report("api-1 SIGKILL", lost_at, started, stack)
    restart(Path(stack.plane.directory), "api-1")


def _restarted_mid_failover(stack: Stack, component: str, case: str) -> None:
    """*component* crashed and started again 2 s later, half-way through a failover."""
    started = _start_failover(stack)
    _wait_mid_failover(stack, started)
    lost_at = time.monotonic()
    back = restart(Path(stack.plane.directory), component, down_s=2.0)
    _wait_completed(stack, started)
    _report(case, lost_at, started, stack, back_after=back)


def test_control_worker_and_orchestrator_killed_mid_failover(stack: Stack) -> None:
    """The host of the orchestrating run loses power: its worker and the run's process
    die together. The zombie automation marks the run Crashed, the rerun automation
    schedules it again, the other control worker runs it, and it finishes the plan."""
    started = _start_failover(stack)
    _wait_mid_failover(stack, started)
    run = _read_run(stack.plane.api_url, started.run_id)
    worker = run.labels["prefect.worker.name"]
    pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
    lost_at = time.monotonic()
    os.killpg(stack.workers[worker].pid, signal.SIGKILL)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        os.kill(pid, signal.SIGKILL)
    stack.workers[worker].wait(10)

    def crashed() -> bool:
        state = _read_run(stack.plane.api_url, started.run_id).state
        return state is not None and (state.is_crashed() or state.is_scheduled())

    _until("the zombie run crashed", crashed, COMPLETE_WITHIN_S)
    crashed_after = time.monotonic() - lost_at
    assert "zombie" in _crash_message(stack.plane.api_url, started.run_id)

    def rerunning() -> Any:
        again = _read_run(stack.plane.api_url, started.run_id)
        return again if again.run_count >= 2 and again.state.is_running() else None

    again = _until("the rerun running", rerunning, COMPLETE_WITHIN_S)
    rerun_after = time.monotonic() - lost_at
    assert again.labels["prefect.worker.name"] != worker
    _wait_completed(stack, started)
    _report("control worker + orchestrator SIGKILL", lost_at, started, stack,
            crashed_after=crashed_after, rerun_after=rerun_after)  # fmt: skip


def test_postgres_restarted_mid_failover(stack: Stack) -> None:
    """After the power-loss case: once, the server's automations stopped acting after
    a PostgreSQL restart (docs/deploy.md), and that case depends on them."""
    _restarted_mid_failover(stack, "postgres", "postgres immediate stop + start")


def test_redis_restarted_mid_failover(stack: Stack) -> None:
    """Last: Redis comes back empty, and the leases it held are gone with it."""
    _restarted_mid_failover(stack, "redis", "redis SIGKILL + start (empty)")
