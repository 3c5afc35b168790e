"""Losing jhb1 whole in the namespaced lab (slow: the lab, the HA control plane, the
mirrors, a probe threshold and a failover, several minutes): every process of the DC
is gone, ONE DC incident (and one non-paging one: nobody runs its mirrors), the
failover runs off-site on a control worker, the jhb1 clients land only in ZA and
answer through the front door, and no client loses more acknowledged writes than
were made after the snapshot it was restored from."""

from __future__ import annotations

from deployments.demo import dc_loss
from ppo_dr.inventory import load_fleet
from ppo_dr.lab import netns
from ppo_dr.probe.pools import UNATTENDED_KIND
from ppo_dr.store import Store
from tests.topology.conftest import distributed, namespaced_lab_marks

pytestmark = namespaced_lab_marks(1500)

CONTROL_WORKERS = {"control@cpt1", "control@lon1"}


def test_losing_jhb1_whole_fails_its_clients_over_within_za() -> None:
    with distributed(clients=3, before_prefect=dc_loss.turn_on_auto_failover) as made:
        lab = made.lab
        fleet = load_fleet(lab.fleet_file)
        mirrored = dc_loss.mirror_every_app_server(made.api_url, fleet, say=lambda _: None)
        for server_id, worker in mirrored.items():
            dc = fleet.server(server_id).dc
            assert worker == f"dc-{dc}@{dc}", (server_id, worker)
        probe = dc_loss.wait_for_probe(made.api_url)
        assert probe.labels[dc_loss.WORKER_LABEL] in CONTROL_WORKERS
        with Store.open(lab.store_url) as store:
            victims = sorted(
                p.client_id for p in store.placements() if fleet.server(p.server_id).dc == "jhb1"
            )
        assert victims

        lab.break_("jhb1", "power")
        net = lab.network()
        assert net is not None and netns.pids_in(net.dc("jhb1").namespace) == []
        with Store.open(lab.store_url) as store:
            incident = dc_loss.wait_for_dc_incident(store, "jhb1")
            run = dc_loss.failover_run(made.api_url, incident.id)
            assert run.state.is_completed(), run.state
            assert run.labels[dc_loss.WORKER_LABEL] in CONTROL_WORKERS
            assert [i.id for i in dc_loss.dc_incidents(store, "jhb1")] == [incident.id]
            plan_id = next(t for t in run.tags if t.startswith("plan:")).removeprefix("plan:")
            dc_loss.count_lost_writes(lab, plan_id)
            results = {r.client_id: r for r in store.failover_results(plan_id)}
            placed = {c: store.placement(c) for c in victims}
            # Nobody runs jhb1's mirrors now: said once, without paging anyone.
            pool = dc_loss.wait_for_unattended_pool(store)
            assert (pool.scope["subject"], pool.paging) == ("dc-jhb1", False)
            assert len(store.incidents(states=("open",), kind=UNATTENDED_KIND)) == 1

        fleet = load_fleet(lab.fleet_file)  # lists the servers the failover provisioned
        acks = lab.directory / "workload" / "acks.jsonl"
        for client in victims:
            home = placed[client]
            assert home is not None
            dc = fleet.server(home.server_id).dc
            assert dc != "jhb1" and fleet.dc(dc).country == "ZA", (client, home.server_id)
            assert results[client].outcome == "ok" and results[client].to_server == home.server_id
            assert dc_loss.answer_through_front_door(lab, fleet, client) == (200, home.server_id)
            check = dc_loss.writes_check(acks, incident, results[client])
            assert check.lost <= check.acked_after_snapshot, check
