"""Pool routing with real workers on the HA control plane: ``deploy`` registers the
topology (twice: idempotent), a jhb1 server's mirror runs on the jhb1 worker, never
on cpt1's, and waits in its DC's mirror queue while the queue's limit is full; bad
input changes nothing."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.schemas.objects import FlowRun

from deployments.automations import FAILOVER_RERUN_AUTOMATION, ZOMBIE_AUTOMATION
from deployments.deploy import DeployError, check_server, deploy
from deployments.registry import CONTROL_POOL, distributed_deployments, mirror_queues
from deployments.workers import WorkerError, pool_for, start_worker
from flows.mirror_schedule import MIRROR_QUEUE, QueueLimit, dc_pool, ensure_work_queues
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab import controlplane
from tests.lab.test_topology import make_fleet
from tests.prefect_fixtures import isolated_env, using_api
from tests.threads import serving
from tests.topology.conftest import needs_binaries

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(900), needs_binaries]


@pytest.fixture(scope="module")
def fleet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fleet")
    make_fleet(directory, clients=4)
    return directory / "fleet.yaml"


@pytest.fixture(scope="module")
def deployed(plane: controlplane.ControlPlane, fleet_file: Path) -> list[str]:
    lines: list[str] = []
    deploy(plane.api_url, fleet_file, echo=lines.append)
    return lines


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.fixture
def workers(
    plane: controlplane.ControlPlane, fleet_file: Path, deployed: list[str], tmp_path: Path
) -> Iterator[dict[str, str]]:
    """A jhb1 and a cpt1 worker; yields pool -> worker name."""
    env = isolated_env(PPO_DR_FLEET=str(fleet_file), PPO_DR_HOME=str(tmp_path / "home"))
    names = {dc_pool("jhb1"): "dc-jhb1@test", dc_pool("cpt1"): "dc-cpt1@test"}
    procs = [
        start_worker(
            pool, name=name, api_url=plane.api_url, base_env=env, log=tmp_path / f"{pool}.log"
        )
        for pool, name in names.items()
    ]
    try:
        yield names
    finally:
        for proc in procs:
            _stop(proc)


def test_deploy_registers_every_pool_and_deployment(
    plane: controlplane.ControlPlane, fleet_file: Path, deployed: list[str]
) -> None:
    from prefect.client.orchestration import get_client

    assert "work pool dc-jhb1: created" in deployed
    again: list[str] = []
    count = deploy(plane.api_url, fleet_file, echo=again.append)
    assert [line for line in again if line.startswith("work pool")] == [
        f"work pool {p}: unchanged" for p in ("control", "dc-jhb1", "dc-cpt1", "dc-lon1")
    ]
    assert all("created" not in line for line in again if "concurrency limit" in line)
    queues = [f"work queue dc-{dc}/mirror (2)" for dc in ("cpt1", "jhb1", "lon1")]
    assert [line for line in deployed if line.startswith("work queue")] == [
        f"{q}: created" for q in queues
    ]
    assert [line for line in again if line.startswith("work queue")] == [
        f"{q}: unchanged" for q in queues
    ]
    # The probe's first scheduled run is a period away: deploy starts one now, once.
    [started] = [line for line in deployed if line.startswith("probe: ")]
    assert started.endswith("started now (the schedule's first run is a period away)")
    probe_run = started.split()[2]
    assert [line for line in again if line.startswith("probe: ")] == [
        f"probe: run {probe_run} is Scheduled, none started"
    ]
    for name in (ZOMBIE_AUTOMATION, FAILOVER_RERUN_AUTOMATION):  # a SIGKILLed run's rerun
        assert f"automation: {name} (created)" in deployed
        assert f"automation: {name} (unchanged)" in again
    with using_api(plane.api_url), get_client(sync_client=True) as client:
        deployments = client.read_deployments(limit=200)
    registered = {f"{d.name}": d.work_pool_name for d in deployments}
    assert len(registered) == count
    # Applied 8 at a time, reported in the declaration's order, each once.
    declared = [
        f"deployment {r.deployment.flow_name}/{r.deployment.name} -> {r.pool}"
        for r in distributed_deployments(load_fleet(fleet_file))
    ]
    assert [line for line in again if line.startswith("deployment ")] == declared
    assert registered["mirror-app-jhb1-1"] == "dc-jhb1"
    assert registered["mirror-app-cpt1-1"] == "dc-cpt1"
    assert registered["probe-fleet"] == registered["failover"] == CONTROL_POOL
    # A failover orchestrates on control; each client's move runs in its target DC.
    assert registered["into-cpt1"] == "dc-cpt1" and registered["into-lon1"] == "dc-lon1"
    (orchestrator,) = [d for d in deployments if d.name == "failover"]
    assert orchestrator.parameters["client_runs"] == "target-pool"
    queue_of = {d.name: d.work_queue_name for d in deployments}
    assert queue_of["mirror-app-jhb1-1"] == queue_of["mirror-app-lon1-1"] == MIRROR_QUEUE
    assert queue_of["into-jhb1"] == "default"


def test_mirror_queue_limit_is_restored_and_never_ahead_of_a_restore(
    plane: controlplane.ControlPlane, fleet_file: Path, deployed: list[str]
) -> None:
    """A queue limit changed or paused by hand is set back; the restores' ``default``
    queue stays unlimited and first in priority."""
    from prefect.client.orchestration import get_client

    wanted = mirror_queues(load_fleet(fleet_file))
    with using_api(plane.api_url), get_client(sync_client=True) as client:
        jhb1 = client.read_work_queue_by_name(MIRROR_QUEUE, work_pool_name="dc-jhb1")
        client.update_work_queue(jhb1.id, concurrency_limit=5)
        lon1 = client.read_work_queue_by_name(MIRROR_QUEUE, work_pool_name="dc-lon1")
        client.update_work_queue(lon1.id, concurrency_limit=2, is_paused=True)
        done = {f"{q.pool}/{q.queue}": what for q, what in ensure_work_queues(wanted)}
        assert done == {
            "dc-cpt1/mirror": "unchanged",
            "dc-jhb1/mirror": "updated, was 5",
            "dc-lon1/mirror": "updated, was 2, paused",
        }
        for pool in ("dc-jhb1", "dc-lon1"):
            mirror = client.read_work_queue_by_name(MIRROR_QUEUE, work_pool_name=pool)
            default = client.read_work_queue_by_name("default", work_pool_name=pool)
            assert (mirror.concurrency_limit, mirror.is_paused) == (2, False)
            assert default.concurrency_limit is None and default.priority < mirror.priority


def test_mirror_of_a_jhb1_server_runs_on_a_jhb1_worker(
    plane: controlplane.ControlPlane, workers: dict[str, str]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    with using_api(plane.api_url):
        run = run_deployment("mirror-server/mirror-app-jhb1-1", timeout=0)
        assert isinstance(run, FlowRun)  # the sync form
        deadline = time.monotonic() + 240
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                run = client.read_flow_run(run.id)
                if "prefect.worker.name" in (run.labels or {}):
                    break
                time.sleep(1)
    assert run.work_pool_name == "dc-jhb1"
    assert run.labels["prefect.worker.name"] == workers["dc-jhb1"]


def _active_in(client: Any, queue_id: UUID) -> list[FlowRun]:
    """The Pending and Running flow runs of work queue *queue_id* (what its limit counts)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkQueueFilter,
        WorkQueueFilterId,
    )
    from prefect.client.schemas.objects import StateType

    busy = FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING])
    return list(
        client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=busy)),
            work_queue_filter=WorkQueueFilter(id=WorkQueueFilterId(any_=[queue_id])),
        )
    )


def test_a_mirror_run_waits_in_its_queue_while_the_dc_limit_is_full(
    plane: controlplane.ControlPlane, fleet_file: Path, deployed: list[str], tmp_path: Path
) -> None:
    """The DC's two mirror slots held, a jhb1 worker polls the pool and leaves a new
    mirror run Scheduled (no process started); it takes it once one slot frees."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelled, Completed, Pending

    env = isolated_env(
        PPO_DR_FLEET=str(fleet_file),
        PPO_DR_HOME=str(tmp_path / "home"),
        PREFECT_WORKER_QUERY_SECONDS="1",
    )
    with using_api(plane.api_url), get_client(sync_client=True) as client:
        queue = client.read_work_queue_by_name(MIRROR_QUEUE, work_pool_name="dc-jhb1")
        assert queue.concurrency_limit == 2
        for stale in _active_in(client, queue.id):  # left by another test's worker
            client.set_flow_run_state(stale.id, Cancelled(), force=True)
        holder = client.read_deployment_by_name("mirror-server/mirror-app-jhb1-1")
        held = [client.create_flow_run_from_deployment(holder.id) for _ in range(2)]
        for run in held:  # forced: no process, no deployment slot, only the queue's
            client.set_flow_run_state(run.id, Pending(), force=True)
        waiting = run_deployment("mirror-server/mirror-app-jhb1-2", timeout=0)
        assert isinstance(waiting, FlowRun)
        asked = waiting.created
        worker = start_worker(
            "dc-jhb1", name="dc-jhb1@queue", api_url=plane.api_url, base_env=env,
            log=tmp_path / "worker.log",
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            polled = None
            while time.monotonic() < deadline:  # two polls after the run was asked for
                polled = client.read_work_queue(queue.id).last_polled
                if polled and asked and (polled - asked).total_seconds() > 3:
                    break
                time.sleep(1)
            assert polled and asked and (polled - asked).total_seconds() > 3, polled
            run = client.read_flow_run(waiting.id)
            assert run.state and run.state.is_scheduled(), run.state
            assert "prefect.worker.name" not in (run.labels or {})
            client.set_flow_run_state(held[0].id, Completed(), force=True)
            while time.monotonic() < deadline:
                run = client.read_flow_run(waiting.id)
                if "prefect.worker.name" in (run.labels or {}):
                    break
                time.sleep(1)
            assert run.labels.get("prefect.worker.name") == "dc-jhb1@queue", run.state
        finally:
            for each in [*held, waiting]:
                client.set_flow_run_state(each.id, Cancelled(), force=True)
            _stop(worker)


def test_worker_pools_and_bad_dc(fleet_file: Path) -> None:
    fleet: Fleet = load_fleet(fleet_file)
    assert pool_for(fleet, dc="lon1", control=False) == "dc-lon1"
    assert pool_for(fleet, dc=None, control=True) == "control"
    with pytest.raises(WorkerError, match="unknown data centre 'nowhere'; known: jhb1, cpt1, lon1"):
        pool_for(fleet, dc="nowhere", control=False)
    with pytest.raises(WorkerError, match="exactly one"):
        pool_for(fleet, dc="jhb1", control=True)
    routed = distributed_deployments(fleet)
    assert {r.pool for r in routed} == {"control", "dc-jhb1", "dc-cpt1", "dc-lon1"}
    by_name = {r.deployment.name: r for r in routed}
    for dc in ("jhb1", "cpt1", "lon1"):  # a client's move runs on its target DC's pool
        into = by_name[f"into-{dc}"]
        assert into.pool == into.deployment.work_pool_name == f"dc-{dc}"
        assert into.deployment.flow_name == "fail-over-clients"
    assert by_name["failover"].pool == CONTROL_POOL
    assert by_name["failover"].deployment.parameters == {"client_runs": "target-pool"}
    # Every server a client may live on is mirrored on schedule: a spare too (clients
    # a failover moves there), a mirror never.
    mirrored = {
        r.deployment.parameters["server_id"]
        for r in routed
        if r.deployment.flow_name == "mirror-server"
    }
    assert mirrored == {s.id for s in fleet.servers if s.role in ("app", "spare")}
    assert by_name["mirror-spare-jhb1-1"].pool == "dc-jhb1"
    # Mirrors wait in their DC pool's limited queue; restores go to the pool's default.
    assert mirror_queues(fleet) == [
        QueueLimit(f"dc-{dc}", MIRROR_QUEUE, 2) for dc in ("cpt1", "jhb1", "lon1")
    ]
    for item in routed:
        queue = item.deployment.work_queue_name
        assert queue == (MIRROR_QUEUE if item.deployment.flow_name == "mirror-server" else None)


def test_deploy_refuses_unreachable_and_foreign_servers(
    plane: controlplane.ControlPlane, fleet_file: Path
) -> None:
    closed = f"http://127.0.0.1:{plane.pg_port + 0}/api"  # PostgreSQL: not HTTP at all
    with pytest.raises(DeployError, match=r"unreachable|not a Prefect API|does not answer"):
        deploy(closed, fleet_file, echo=lambda _: None)
    with pytest.raises(DeployError, match=r"127\.0\.0\.1:1/api unreachable"):
        check_server("http://127.0.0.1:1/api")
    # The API without /api: HAProxy forwards, Prefect answers 404 there.
    with pytest.raises(DeployError, match="not a Prefect API"):
        check_server(plane.api_url.removesuffix("/api"))


class _OldPrefect(http.server.BaseHTTPRequestHandler):
    """A server that answers like Prefect 2.20: healthy, another version."""

    def do_GET(self) -> None:
        body = {"/api/health": "true", "/api/admin/version": '"2.20.3"'}.get(self.path)
        self.send_response(200 if body else 404)
        self.end_headers()
        self.wfile.write((body or "{}").encode())

    def log_message(self, *args: object) -> None:
        pass


def test_deploy_refuses_another_prefect_version_and_writes_nothing(fleet_file: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OldPrefect)
    url = f"http://127.0.0.1:{server.server_address[1]}/api"
    with (
        serving(server),
        pytest.raises(DeployError, match=rf"{url} runs 2\.20\.3, this ppo-dr uses 3\.9"),
    ):
        deploy(url, fleet_file, echo=lambda _: None)
