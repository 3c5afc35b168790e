"""Where a failover's client runs run, when the orchestrator stops waiting, run names."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ppo_dr.errors import PermanentError
from ppo_dr.failover.model import ProvisionRequest
from ppo_dr.failover.plan import FleetState, Plan, Scope, Target, plan_failover
from ppo_dr.failover.runs import (
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
    assert client_deployment("target-pool", "cpt1") == "fail-over-client/into-cpt1"
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
