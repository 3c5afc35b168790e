"""``ppo-dr lab up --topology distributed`` end to end (slow: the HA control plane
alone takes 20-80 s): every pool gets its worker, online in the API; a DC's power
loss kills its worker and the server sees that pool without one; ``lab down`` leaves
no namespace, no control-plane process, no worker (checked by name and pid)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from cli.main import app
from deployments import distributed_lab
from deployments.distributed_lab import DistributedLab
from ppo_dr.errors import LabError
from ppo_dr.inventory import load_fleet
from ppo_dr.lab import controlplane, netns
from ppo_dr.lab.chaos import records
from ppo_dr.lab.chaos.fleets import DistributedFleet, open_fleet
from ppo_dr.lab.controlplane import api_healthy
from ppo_dr.lab.controlplane_restart import restart_together
from ppo_dr.pids import alive
from ppo_dr.store import Store
from tests.prefect_fixtures import using_api
from tests.topology.conftest import distributed, namespaced_lab_marks

pytestmark = namespaced_lab_marks(900)


@pytest.fixture(scope="module")
def made() -> Iterator[DistributedLab]:
    with distributed() as started:
        yield started


def _workers(api_url: str) -> dict[str, dict[str, str]]:
    """pool -> {worker name: status} as the API reports them."""
    from prefect.client.orchestration import get_client

    with using_api(api_url), get_client(sync_client=True) as client:
        return {
            pool.name: {
                w.name: str(w.status.value) for w in client.read_workers_for_work_pool(pool.name)
            }
            for pool in client.read_work_pools()
        }


def _wait_for(check: object, timeout: float) -> float:
    """Seconds until ``check()`` holds; fails after *timeout*."""
    assert callable(check)
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(1.0)
    return time.monotonic() - started


def test_every_pool_has_its_worker_in_its_dc(made: DistributedLab) -> None:
    assert made.workers == [
        "dc-jhb1@jhb1",
        "dc-cpt1@cpt1",
        "dc-lon1@lon1",
        "control@cpt1",
        "control@lon1",
    ]
    net = made.lab.network()
    assert net is not None
    pids = made.lab.recorded_pids()
    for name in made.workers:
        dc = name.rsplit("@", 1)[1]
        assert pids[name] in netns.pids_in(net.dc(dc).namespace)
    _wait_for(
        lambda: (
            _workers(made.api_url)
            == {
                "control": {"control@cpt1": "ONLINE", "control@lon1": "ONLINE"},
                "dc-jhb1": {"dc-jhb1@jhb1": "ONLINE"},
                "dc-cpt1": {"dc-cpt1@cpt1": "ONLINE"},
                "dc-lon1": {"dc-lon1@lon1": "ONLINE"},
            }
        ),
        120,
    )


def test_a_dc_power_loss_leaves_its_pool_without_a_worker(made: DistributedLab) -> None:
    lab = made.lab
    worker_pid = lab.recorded_pids()["dc-jhb1@jhb1"]
    result = CliRunner().invoke(
        app, ["lab", "break", "jhb1", "--fault", "power", "--dir", str(lab.directory)]
    )
    assert result.exit_code == 0, result.output
    assert "dc-jhb1@jhb1" in result.output
    try:
        assert not alive(worker_pid)
        net = lab.network()
        assert net is not None and netns.pids_in(net.dc("jhb1").namespace) == []
        offline_after = _wait_for(
            lambda: _workers(made.api_url)["dc-jhb1"] == {"dc-jhb1@jhb1": "OFFLINE"}, 240
        )
        print(f"dc-jhb1's worker OFFLINE in the API {offline_after:.0f} s after the power loss")
        workers = _workers(made.api_url)
        assert workers["control"] == {"control@cpt1": "ONLINE", "control@lon1": "ONLINE"}
    finally:
        lab.heal("jhb1", timeout=60)
    assert alive(lab.recorded_pids()["dc-jhb1@jhb1"])


def test_the_store_is_the_control_planes_postgresql_from_the_first_placement(
    made: DistributedLab,
) -> None:
    lab = made.lab
    fleet = load_fleet(lab.fleet_file)
    assert fleet.store.url == lab.store_url
    assert lab.store_url.startswith("postgresql://ppo@127.0.0.1:")  # via HAProxy, no password
    net = lab.network()
    assert net is not None
    assert lab.inner_store_url.startswith(f"postgresql://ppo@{net.control.address}:")
    frontdoor = json.loads((lab.directory / "frontdoor.json").read_text())
    assert frontdoor["store_url"] == lab.inner_store_url
    with Store(lab.store_url) as store:
        assert store.dialect == "postgresql"
        assert {p.client_id: p.server_id for p in store.placements()} == {
            c.id: c.server for c in fleet.clients
        }


def test_the_chaos_run_sees_the_distributed_lab_as_its_own_fleet(made: DistributedLab) -> None:
    """What ``lab chaos`` needs of this lab: its mirror deployments as deployed, the
    control plane's cluster as the store's, the workers' logs, the front door from the
    wan; and the whole API lost (both servers) and back, HAProxy answering again."""
    from prefect.client.orchestration import get_client

    lab = made.lab
    fleet = open_fleet(lab.directory)
    assert isinstance(fleet, DistributedFleet)
    cp_dir = distributed_lab.control_plane_dir(lab.directory)
    assert fleet.store_cluster() == cp_dir and fleet.api_url == made.api_url
    assert [p.name for p in fleet.run_logs()] == sorted(f"{w}.log" for w in made.workers)
    apps = sorted(s.id for s in load_fleet(lab.fleet_file).servers if s.role == "app")
    with using_api(made.api_url), get_client(sync_client=True) as client:
        deployed = {
            f"{client.read_flow(d.flow_id).name}/{d.name}" for d in client.read_deployments()
        }
    assert fleet.mirror_deployments() == [f"mirror-server/mirror-{a}" for a in apps]
    assert set(fleet.mirror_deployments()) <= deployed
    client_id = load_fleet(lab.fleet_file).clients[0].id
    assert records.journal_seqs(load_fleet(lab.fleet_file), client_id, door=fleet)
    with pytest.raises(LabError, match="is not the lab's front door"):
        records.journal_seqs(load_fleet(lab.fleet_file), client_id)  # not from the host

    down_at: list[bool] = []
    watcher = threading.Thread(
        target=lambda: down_at.append(_wait_for(lambda: not api_healthy(made.api_url), 30) >= 0)
    )
    watcher.start()
    took = restart_together(cp_dir, ["api-1", "api-2"], down_s=3.0)
    watcher.join()
    assert down_at == [True] and took >= 3.0
    assert api_healthy(made.api_url)
    with pytest.raises(LabError, match="restart postgres on its own"):
        restart_together(cp_dir, ["api-1", "postgres"])


def test_lab_down_leaves_nothing(made: DistributedLab) -> None:
    lab = made.lab
    pids = set(lab.recorded_pids().values())
    cp_dir = distributed_lab.control_plane_dir(lab.directory)
    pids |= {c.pid for c in controlplane.load(cp_dir).components}
    result = CliRunner().invoke(app, ["lab", "down", "--dir", str(lab.directory)])
    assert result.exit_code == 0, result.output
    assert netns.existing(netns.prefix_for(lab.directory)) == []
    assert [pid for pid in pids if alive(pid)] == []
    assert controlplane.marked_pids(cp_dir) == []
    assert lab.processes() == []
