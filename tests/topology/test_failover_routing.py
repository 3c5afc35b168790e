"""A failover on the HA control plane with ``client_runs="target-pool"``: jhb1 is lost
(no jhb1 worker runs at all), each target server's ``fail-over-clients`` run lands on the cpt1
worker (checked from the flow run's pool and worker in the API), and the failover
completes with every client answering from cpt1 through the front door."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.deploy import ensure_work_pools
from deployments.registry import fail_over_clients_deployment
from deployments.workers import start_worker
from flows.failover import failover
from flows.mirror_schedule import dc_pool
from ppo_dr.inventory import load_fleet
from ppo_dr.lab import controlplane
from ppo_dr.lab.supervisor import Lab
from ppo_dr.store import Store
from tests.labs import front_door, own_lab_of_test
from tests.prefect_fixtures import isolated_env, using_api
from tests.topology.conftest import needs_binaries
from tests.topology.test_routing import _stop

pytestmark = [pytest.mark.controlplane, pytest.mark.slow, pytest.mark.timeout(900), needs_binaries]

WORKER = "dc-cpt1@failover-test"


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    with own_lab_of_test(tmp_path, monkeypatch, clients=4, size_mb=2, settle_s=1.0) as started:
        yield started


@pytest.fixture
def cpt1_worker(
    plane: controlplane.ControlPlane, lab: Lab, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The cpt1 pool with its client deployment, and one worker on it (none on jhb1)."""
    with using_api(plane.api_url):
        ensure_work_pools([dc_pool("cpt1")])
        fail_over_clients_deployment("cpt1").apply()
    env = isolated_env(PPO_DR_HOME=str(tmp_path / "worker-home"))
    proc = start_worker(
        dc_pool("cpt1"), name=WORKER, api_url=plane.api_url, base_env=env,
        log=tmp_path / "worker.log",
    )  # fmt: skip
    try:
        yield proc
    finally:
        _stop(proc)


def test_each_client_of_a_failover_is_restored_by_a_worker_of_its_target_dc(
    plane: controlplane.ControlPlane, lab: Lab, cpt1_worker: subprocess.Popen[bytes]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    lost = "app-jhb1-1"
    lab.break_(lost, "power")
    with using_api(plane.api_url):
        result = failover(
            server=lost,
            to_dc="cpt1",
            approve=True,
            fleet_file=lab.fleet_file,
            client_runs="target-pool",
        )
        assert isinstance(result, dict), result
        assert result["state"] == "done", result
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["fail-over-clients"]))
            )
    mine = [r for r in runs if r.parameters.get("plan_id") == result["plan_id"]]
    moved = [m["client_id"] for r in mine for m in r.parameters["moves"]]
    assert sorted(moved) == sorted(result["moved"])  # each client in one batch run
    assert len(mine) == len({r.parameters["to_server"] for r in mine})  # one per target
    for run in mine:
        assert run.state is not None and run.state.is_completed(), run.state
        assert run.work_pool_name == "dc-cpt1"
        assert (run.labels or {}).get("prefect.worker.name") == WORKER
    fleet = load_fleet(lab.fleet_file)
    with Store.open(lab.store_url) as store:
        for client_id, home in result["moved"].items():
            assert fleet.server(home).dc == "cpt1"
            assert store.placement(client_id).server_id == home  # type: ignore[union-attr]
            assert front_door(fleet, client_id) == (200, home)
