"""Drain, return and rebalance, run for real on a lab of their own: the hardware-upgrade
scene end to end, with no acknowledged write lost (the workload's log against the
ledger), the drained mark keeping every plan off the server meanwhile."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from cli.main import app
from flows.drain import drain
from flows.rebalance import rebalance
from ppo_dr.failover.rebalance import plan_drain, plan_rebalance
from ppo_dr.failover.rebalance_facts import rebalance_inputs
from ppo_dr.lab.lost_writes import record_lost_writes
from ppo_dr.lab.supervisor import Lab
from ppo_dr.store import Store
from tests.flows.test_failover import own_lab  # noqa: F401  (fixture: 6 clients, mirrored)

pytestmark = pytest.mark.timeout(300)

SERVER = "app-jhb1-1"
TARGET = "app-jhb1-2"


def placed(lab: Lab) -> dict[str, str]:
    with Store.open(lab.store_url) as store:
        return {p.client_id: p.server_id for p in store.placements()}


def lost(lab: Lab, plan_id: str) -> dict[str, int | None]:
    """The lab's count of acknowledged writes lost by the plan's moves, as recorded."""
    record_lost_writes(lab.fleet_file, plan_id)
    with Store.open(lab.store_url) as store:
        return {r.client_id: r.lost_writes for r in store.failover_results(plan_id)}


@pytest.mark.lab
@pytest.mark.slow  # four planned migrations, two mirror runs: minutes on a loaded machine
def test_drain_return_and_rebalance_lose_no_acknowledged_write(
    prefect_api: str,
    own_lab: Lab,  # noqa: F811
) -> None:
    movers = sorted(c for c, s in placed(own_lab).items() if s == SERVER)
    assert movers
    started = time.monotonic()
    drained = drain(server=SERVER, to_dc="jhb1", by="test", approve=True,
                    fleet_file=own_lab.fleet_file)  # fmt: skip
    assert isinstance(drained, dict) and drained["state"] == "done", drained
    assert set(drained["moved"]) == set(movers)
    assert lost(own_lab, drained["plan_id"]) == dict.fromkeys(movers, 0)
    assert all(s != SERVER for s in placed(own_lab).values())
    with Store.open(own_lab.store_url) as store:
        assert [d.server_id for d in store.drained_servers()] == [SERVER]
        assert [(w.scope_kind, w.scope_id) for w in store.active_maintenance()] == [
            ("server", SERVER)
        ]
    # While drained, no plan targets it, even when the rest of its DC is crowded.
    state, closures = rebalance_inputs(own_lab.fleet_file, (), datetime.now(UTC))
    crowded = plan_rebalance(state, target_util=0.05, closures=closures)
    assert crowded.plan is None or all(m.to_server != SERVER for m in crowded.plan.moves)

    returned = CliRunner().invoke(
        app, ["server", "return", SERVER, "--fleet", str(own_lab.fleet_file)]
    )
    assert returned.exit_code == 0, returned.output
    with Store.open(own_lab.store_url) as store:
        assert store.drained_servers() == [] and store.active_maintenance() == []

    # 40 clients per app server in the lab: 5 % is 2; app-jhb1-2 holds more now.
    back = rebalance(target_util=0.05, approve=True, fleet_file=own_lab.fleet_file)
    assert isinstance(back, dict) and back["state"] == "done", back
    assert set(back["moved"].values()) == {SERVER}  # same DC first, and it has room
    assert lost(own_lab, back["plan_id"]) == dict.fromkeys(back["moved"], 0)
    print(f"\ndrain + return + rebalance: {time.monotonic() - started:.1f} s")


@pytest.mark.lab
def test_a_failed_drain_lifts_its_mark_and_window(
    prefect_api: str,
    own_lab: Lab,  # noqa: F811
) -> None:
    """Its clients still live on the server: they must not stay under maintenance (never
    paged for) nor be kept off by the drained mark after the drain gave up."""
    stayers = sorted(c for c, s in placed(own_lab).items() if s == SERVER)
    state, closures = rebalance_inputs(own_lab.fleet_file, (), datetime.now(UTC))
    plan = plan_drain(state, SERVER, to_server=TARGET, closures=closures).plan
    assert plan is not None and {m.to_server for m in plan.moves} == {TARGET}
    own_lab.break_(TARGET, "power")  # after the plan: every migration into it fails
    ended = drain(server=SERVER, to_server=TARGET, by="test", plan_json=plan.to_json(),
                  approve=True, fleet_file=own_lab.fleet_file, return_state=True)  # fmt: skip
    assert ended.is_failed(), ended
    assert f"drain of {SERVER} failed" in str(ended.message)
    assert "no longer drained" in str(ended.message)
    with Store.open(own_lab.store_url) as store:
        assert store.drained_servers() == [] and store.active_maintenance() == []
    assert sorted(c for c, s in placed(own_lab).items() if s == SERVER) == stayers
