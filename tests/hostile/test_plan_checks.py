"""An approved plan handed back as JSON (a file, a UI parameter) is input like any
other: pure checks that it names only what the fleet has and no path in a snapshot id,
so the runbooks can refuse it before a step acts."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from ppo_dr.failover.plan import FleetState, Plan, Scope, Target, plan_failover
from ppo_dr.failover.plan_checks import checked_plan
from ppo_dr.failover.plan_json import with_id
from ppo_dr.ids import SHOWN_LEN
from ppo_dr.placement import PlanError
from tests.ppo_dr.failover.fleets import NOW, lab_like, mirrored

FLEET = lab_like()


def _plan(down: frozenset[str] = frozenset(), provisionable: frozenset[str] = frozenset()) -> Plan:
    state = FleetState(
        fleet=FLEET,
        placements={},
        snapshots=mirrored(FLEET),
        now=NOW,
        down=down,
        provisionable=provisionable,
    )
    return plan_failover(state, Scope(server="app-jhb1-1"), Target())


def _edited(plan: Plan, **changes: Any) -> Plan:
    first, *rest = plan.moves
    return with_id(replace(plan, moves=(replace(first, **changes), *rest)))


def test_a_plan_made_from_the_fleet_passes_and_so_does_its_provisioned_server() -> None:
    plan = _plan()
    assert checked_plan(FLEET, plan) is plan
    full = lab_like(servers=[s for s in FLEET_SERVERS if not s[0].startswith("spare")])
    crowded = plan_failover(
        FleetState(
            fleet=full,
            placements={},
            snapshots=mirrored(full),
            now=NOW,
            down=frozenset({"app-jhb1-1", "app-jhb1-2"}),
            provisionable=frozenset({"jhb1", "cpt1", "lon1"}),
        ),
        Scope(server="app-jhb1-1"),
        Target(dc="jhb1"),
    )
    assert crowded.provisions, crowded.render()
    assert checked_plan(full, crowded) is crowded


FLEET_SERVERS = [
    (s.id, s.dc, s.role, s.mirrors, s.capacity.clients, s.capacity.disk_gb) for s in FLEET.servers
]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"client_id": "no-such-client"}, "client 'no-such-client'"),
        ({"from_server": "app-nowhere-9"}, "from server 'app-nowhere-9'"),
        ({"to_server": "app-nowhere-9"}, "to server 'app-nowhere-9'"),
        ({"source_mirror": "mirror-nowhere-9"}, "mirror 'mirror-nowhere-9'"),
        ({"fallback_mirrors": ("mirror-nowhere-9",)}, "mirror 'mirror-nowhere-9'"),
        ({"new_mirrors": ("mirror-cpt1-1", "mirror-nowhere-9")}, "mirror 'mirror-nowhere-9'"),
    ],
)
def test_a_plan_naming_what_the_fleet_lacks_is_refused(changes: dict[str, Any], says: str) -> None:
    plan = _edited(_plan(), **changes)
    with pytest.raises(PlanError, match=says):
        checked_plan(FLEET, plan)
    # The same plan read back from JSON is well formed: only the fleet can refuse it.
    assert Plan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "/abs", "a/b", "2026-11-30T05-00-00Z\x00", "a b", "..", ".x"]
)
def test_a_snapshot_id_that_could_be_a_path_is_refused_in_a_plan(bad: str) -> None:
    data = json.loads(_plan().to_json())
    data["moves"][0]["snapshot_id"] = bad
    with pytest.raises(PlanError, match=r"moves\[0\]\.snapshot_id"):
        Plan.from_json(json.dumps(data))


@pytest.mark.parametrize("good", ["2026-11-30T05-00-00Z", "2026-11-30T050000Z", "old", "a:b_c"])
def test_snapshot_ids_the_catalogue_uses_still_read(good: str) -> None:
    plan = _edited(_plan(), snapshot_id=good)
    assert Plan.from_json(plan.to_json()).moves[0].snapshot_id == good


def test_a_10_kb_id_in_a_plan_is_not_echoed_whole() -> None:
    data = json.loads(_plan().to_json())
    data["moves"][0]["to_server"] = "a" * 10_240
    with pytest.raises(PlanError) as caught:
        Plan.from_json(json.dumps(data))
    assert len(str(caught.value)) < SHOWN_LEN + 100 and "10242 characters" in str(caught.value)
