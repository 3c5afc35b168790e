"""Where a failover's client runs run, when the orchestrator stops waiting, run names."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ppo_dr.errors import PermanentError
from ppo_dr.failover.model import ProvisionRequest
from ppo_dr.failover.plan import FleetState, Plan, Scope, Target, plan_failover
from ppo_dr.failover.runs import (
    ClientBatch,
    batch_key,
    batch_run_name,
    client_batches,
    client_deployment,
    client_deployment_name,
    client_run_verdict,
    failover_run_name,
    target_dcs,
)
from tests.ppo_dr.failover.fleets import NOW, lab_like, mirrored

STATES = ["SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"]
FINAL = ["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]


def test_in_process_runs_need_no_deployment_and_pools_are_named_after_the_target_dc() -> None:
    assert client_deployment("in-process", "cpt1") is None
    assert client_deployment("target-pool", "cpt1") == "fail-over-clients/into-cpt1"
    assert client_deployment_name("lon1") == "into-lon1"


@pytest.mark.parametrize(
    ("client_runs", "dc", "message"),
    [
        ("everywhere", "cpt1", "client_runs 'everywhere' unknown: use one of in-process"),
        ("", "cpt1", "client_runs '' unknown"),
        ("target-pool", "../cpt1", "data centre id"),
        ("target-pool", "", "data centre id"),
    ],
)
def test_bad_routing_input_is_refused(client_runs: str, dc: str, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        client_deployment(client_runs, dc)


@pytest.mark.parametrize("kind", FINAL)
@pytest.mark.parametrize("waited", [0.0, 599.9, 600.0, 10_000.0])
def test_a_final_run_is_finished_however_long_it_took(kind: str, waited: float) -> None:
    assert client_run_verdict(kind, waited, 600.0) == "finished"
    assert client_run_verdict(kind.lower(), waited, 600.0) == "finished"


@pytest.mark.parametrize("kind", STATES)
@pytest.mark.parametrize("waited", [0.0, 599.9, 600.0, 10_000.0])
def test_a_run_no_worker_took_in_time_is_given_up_a_started_one_is_waited_for(
    kind: str, waited: float
) -> None:
    late = kind in {"SCHEDULED", "PENDING"} and waited >= 600.0
    assert client_run_verdict(kind, waited, 600.0) == ("not-started" if late else "wait")


def _plan() -> tuple[Plan, Any]:
    fleet = lab_like()
    state = FleetState(
        fleet=fleet,
        placements={},
        snapshots=mirrored(fleet),
        now=NOW,
        down=frozenset({"app-jhb1-1"}),
        provisionable=frozenset(),
    )
    plan = plan_failover(state, Scope(server="app-jhb1-1"), Target(dc="cpt1"), "emergency")
    assert len(plan.moves) >= 2, plan.render()
    return plan, fleet


def test_target_dcs_follow_the_plans_moves_and_its_provisioned_servers() -> None:
    plan, fleet = _plan()
    assert target_dcs(plan, fleet) == ["cpt1"] * len(plan.moves)
    first, *rest = plan.moves
    provisioned = replace(
        plan,
        moves=(replace(first, to_server="app-lon1-7"), *rest),
        provisions=(ProvisionRequest("app-lon1-7", "lon1"),),
    )
    assert target_dcs(provisioned, fleet) == ["lon1"] + ["cpt1"] * len(rest)
    unknown = replace(plan, moves=(replace(first, to_server="app-nowhere-1"), *rest))
    with pytest.raises(PermanentError, match="target app-nowhere-1 is neither in the fleet"):
        target_dcs(unknown, fleet)


def test_one_batch_per_target_server_in_the_plans_order() -> None:
    plan, fleet = _plan()
    a, b, *rest = plan.moves
    mixed = replace(
        plan,
        moves=(
            replace(a, to_server="app-lon1-7"),
            replace(b, to_server="app-cpt1-1"),
            *(replace(m, to_server="app-cpt1-1") for m in rest),
            replace(a, client_id="late", to_server="app-lon1-7"),
        ),
        provisions=(ProvisionRequest("app-lon1-7", "lon1"),),
    )
    batches = client_batches(mixed, fleet)
    assert [(x.to_server, x.target_dc) for x in batches] == [
        ("app-lon1-7", "lon1"),
        ("app-cpt1-1", "cpt1"),
    ]
    assert [m.client_id for m in batches[0].moves] == [a.client_id, "late"]
    assert [m.client_id for m in batches[1].moves] == [b.client_id, *(m.client_id for m in rest)]
    every = [m for x in batches for m in x.moves]
    assert sorted(m.client_id for m in every) == sorted(m.client_id for m in mixed.moves)
    assert client_batches(replace(plan, moves=()), fleet) == []


def test_a_batch_key_is_stable_across_a_rerun_and_differs_for_any_other_batch() -> None:
    plan, _fleet = _plan()
    first, second, *_ = plan.moves
    batch = ClientBatch("app-cpt1-1", "cpt1", (first, second))
    reordered = ClientBatch("app-cpt1-1", "cpt1", (second, first))
    key = batch_key(plan.plan_id, RUN_ID, batch)
    assert key == batch_key(plan.plan_id, RUN_ID, reordered)  # the rerun's plan, same key
    assert key.startswith(f"{plan.plan_id}-app-cpt1-1-") and key.endswith(RUN_ID)
    others = [
        batch_key(plan.plan_id, "another-run", batch),
        batch_key("0" * len(plan.plan_id), RUN_ID, batch),
        batch_key(plan.plan_id, RUN_ID, ClientBatch("app-cpt1-2", "cpt1", (first, second))),
        batch_key(plan.plan_id, RUN_ID, ClientBatch("app-cpt1-1", "cpt1", (first,))),
    ]
    assert len({key, *others}) == 5


def test_batch_run_names_say_how_many_and_where() -> None:
    assert batch_run_name("0123abcd99", "app-cpt1-1", 12) == "fail-over-12-into-app-cpt1-1-0123abcd"
    assert batch_run_name("", "Bad Server!", 0) == "fail-over-0-into-invalid-"


RUN_ID = "0123abcd-ffff-4444-8888-000000000000"


@pytest.mark.parametrize(
    ("parameters", "planned", "name"),
    [
        ({"incident_id": 9}, False, "failover-incident-9"),
        ({"incident_id": 9, "mode": "planned"}, False, "migrate-incident-9"),
        ({"incident_id": 9}, True, "migrate-incident-9"),
        ({"incident_id": 0, "server": "app-jhb1-1"}, False, "failover-server-app-jhb1-1-0123abcd"),
        ({"incident_id": True, "dc": "jhb1"}, False, "failover-dc-jhb1-0123abcd"),
        ({"server": "../etc"}, False, "failover-server-invalid-0123abcd"),
        ({"clients": ["acme"]}, True, "migrate-clients-acme-0123abcd"),
        ({"clients": ["acme", "b", "c"]}, False, "failover-clients-acme-and-2-0123abcd"),
        ({"clients": ["A B"]}, False, "failover-clients-invalid-0123abcd"),
        ({"plan_json": "{}"}, False, "failover-plan-0123abcd"),
        ({}, False, "failover-plan-0123abcd"),
    ],
)
def test_failover_run_names(parameters: dict[str, Any], planned: bool, name: str) -> None:
    assert failover_run_name(parameters, RUN_ID, planned=planned) == name


def test_a_run_without_an_id_is_named_local() -> None:
    assert failover_run_name({"dc": "cpt1"}, None, planned=False) == "failover-dc-cpt1-local"
