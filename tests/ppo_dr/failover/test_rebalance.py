"""The rebalance and drain planners over fleets: residency, capacity, closures, bad input.

Random fleets (hypothesis) are judged against the brute force of
:mod:`test_rebalance_search` on a problem the test builds itself from fleet.yaml's
rules (server country and declared mirrors' countries), so the planner's own
residency derivation is checked, not reused.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_dr.failover.model import GB, FleetState
from ppo_dr.failover.plan_json import Plan
from ppo_dr.failover.rebalance import Closures, plan_drain, plan_rebalance
from ppo_dr.failover.rebalance_model import Host, Problem, Tenant
from ppo_dr.inventory import Fleet, parse_fleet
from ppo_dr.placement import PlanError
from tests.ppo_dr.failover.fleets import (
    LAB_SERVERS,
    NOW,
    fleet_data,
    fleet_from,
    lab_like,
    lab_like_data,
    mirrored,
)
from tests.ppo_dr.failover.test_rebalance_search import brute_force

DCS = {"d0": ("ZA", "lab"), "d1": ("ZA", "static"), "d2": ("GB", "lab")}
MIRRORS = {dc: f"mirror-{dc}" for dc in DCS}


@st.composite
def fleets(draw: st.DrawFn) -> tuple[Fleet, frozenset[str], float]:
    servers: list[Any] = [(m, dc, "mirror", (), 0, 1000) for dc, m in MIRRORS.items()]
    apps = []
    for i in range(draw(st.integers(1, 4))):
        dc = draw(st.sampled_from(sorted(DCS)))
        offsite = draw(st.sampled_from([m for d, m in MIRRORS.items() if d != dc]))
        capacity = (draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([5, 10, 20])))
        servers.append((f"app-{i}", dc, "app", (MIRRORS[dc], offsite), *capacity))
        apps.append(f"app-{i}")
    clients = [
        (
            f"client-{i}",
            draw(st.sampled_from(apps)),
            draw(st.sampled_from([("ZA",), ("GB",), ("ZA", "GB")])),
            draw(st.sampled_from([0, 1, 2.5, 4, 8])),
        )
        for i in range(draw(st.integers(0, 5)))
    ]
    drained = frozenset(draw(st.lists(st.sampled_from(apps), max_size=1)))
    target = draw(st.sampled_from([0.5, 0.75, 0.8, 1.0]))
    return fleet_from(fleet_data(DCS, servers, clients)), drained, target


def independent_problem(fleet: Fleet, drained: frozenset[str], target: float) -> Problem:
    """The rules restated from fleet.yaml: a client may sit where the server and both
    its declared mirrors are in countries it allows."""
    hosts = tuple(
        Host(
            s.id,
            s.dc,
            fleet.dc(s.dc).country,
            {"clients": s.capacity.clients, "disk_gb": int(s.capacity.disk_gb * GB)},
            "drained" if s.id in drained else None,
        )
        for s in fleet.servers_by_role("app")
    )
    tenants = tuple(
        Tenant(
            c.id,
            c.server,
            int(c.size_gb * GB),
            c.countries,
            {
                s.id: "abroad"
                for s in fleet.servers_by_role("app")
                if any(fleet.country_of(x) not in c.countries for x in (s.id, *s.mirrors))
            },
        )
        for c in fleet.clients
    )
    return Problem(hosts, tenants, Fraction(target).limit_denominator(10**6))


@settings(max_examples=120, deadline=None)
@given(fleets())
def test_rebalance_honours_residency_capacity_and_reaches_what_brute_force_can(
    case: tuple[Fleet, frozenset[str], float],
) -> None:
    fleet, drained, target = case
    result = plan_rebalance(
        FleetState(fleet, {}, [], NOW), target_util=target, closures=Closures(drained=drained)
    )
    moves = result.plan.moves if result.plan else ()
    incoming: dict[str, list[int]] = {}
    for move in moves:
        client = fleet.client(move.client_id)
        assert move.to_server not in drained
        assert fleet.country_of(move.to_server) in client.countries
        assert all(fleet.country_of(m) in client.countries for m in move.new_mirrors)
        assert len(move.new_mirrors) == 2
        incoming.setdefault(move.to_server, []).append(move.size_bytes)
    for server_id, sizes in incoming.items():
        server = fleet.server(server_id)
        here = [c for c in fleet.clients if c.server == server_id]
        assert len(here) + len(sizes) <= server.capacity.clients
        assert sum(int(c.size_gb * GB) for c in here) + sum(sizes) <= server.capacity.disk_gb * GB
    optimum = brute_force(independent_problem(fleet, drained, target))
    if optimum is None:
        assert result.overloads
    else:
        assert result.overloads == ()
        assert result.moved_bytes <= 1.1 * optimum
    if result.plan is not None:
        assert Plan.from_json(result.plan.to_json()) == result.plan
        assert result.plan.mode == "planned"


def lab_state(size_gb: float = 45) -> FleetState:
    fleet = lab_like()
    return FleetState(fleet, {}, mirrored(fleet, size=int(size_gb * GB)), NOW)


def uneven_state() -> FleetState:
    """app-jhb1-1 holds 90 GB (acme 50, karoo 40); every other server 20 GB."""
    fleet = lab_like()
    sizes = {"acme-mining": 50, "karoo-logistics": 40}
    snapshots = [replace(s, size_bytes=sizes.get(s.client_id, 20) * GB) for s in mirrored(fleet)]
    return FleetState(fleet, {}, snapshots, NOW)


def test_an_unreachable_target_names_server_dimension_and_residency_rule() -> None:
    result = plan_rebalance(lab_state(), target_util=0.5)
    assert result.plan is None
    [over] = result.overloads
    assert (over.server_id, over.dimension) == ("app-jhb1-1", "disk_gb")
    assert "app-lon1-1 is in GB, not allowed" in over.reason
    assert "app-jhb1-1 stays over target in disk_gb: 90%" in over.describe()


def test_the_fewest_bytes_move_and_ties_keep_clients_in_their_data_centre() -> None:
    result = plan_rebalance(uneven_state(), target_util=0.8)
    assert result.plan is not None
    [move] = result.plan.moves
    assert (move.client_id, move.to_server) == ("karoo-logistics", "app-jhb1-2")
    assert move.source_mirror == "mirror-jhb1-1" and move.snapshot_id is None
    assert result.plan.scope.clients == (move.client_id,)
    # The same situation gives the same, content-hashed plan.
    assert plan_rebalance(uneven_state(), target_util=0.8).plan == result.plan


def test_the_planner_never_targets_a_drained_server_and_max_moves_caps_the_plan() -> None:
    closed = Closures(drained=frozenset({"app-jhb1-2"}))
    result = plan_rebalance(uneven_state(), target_util=0.8, closures=closed)
    assert result.plan is not None
    assert [m.to_server for m in result.plan.moves] == ["app-cpt1-1"]
    capped = plan_rebalance(uneven_state(), target_util=0.8, max_moves=0)
    assert capped.plan is None
    assert "limit of 0 move(s)" in capped.overloads[0].reason


def test_dc_limits_the_rebalance_to_that_data_centre() -> None:
    result = plan_rebalance(lab_state(), target_util=0.8, dc="cpt1")
    assert result.plan is None and result.overloads == ()
    assert [u[0] for u in result.usage] == ["app-cpt1-1"]


def test_a_server_under_maintenance_keeps_its_clients_and_takes_none() -> None:
    closed = Closures(maintenance=frozenset({"app-jhb1-1"}))
    result = plan_rebalance(uneven_state(), target_util=0.8, closures=closed)
    assert result.plan is None
    assert "cannot leave it now: it is under maintenance" in result.overloads[0].reason


def test_drain_moves_every_client_off_and_honours_to() -> None:
    with pytest.raises(PlanError, match="app-jhb1-2 has no room"):  # 90 GB beside 45 GB
        plan_drain(lab_state(), "app-jhb1-1", to_dc="jhb1")
    drained = plan_drain(lab_state(20), "app-jhb1-1", to_dc="jhb1")
    assert drained.plan is not None
    assert {m.to_server for m in drained.plan.moves} == {"app-jhb1-2"}
    assert drained.plan.scope.server == "app-jhb1-1"
    to_spare = plan_drain(lab_state(20), "app-jhb1-1", to_server="spare-jhb1-1")
    assert to_spare.plan is not None
    assert {m.to_server for m in to_spare.plan.moves} == {"spare-jhb1-1"}


def test_draining_the_last_server_a_za_only_client_may_use_is_refused() -> None:
    closed = Closures(drained=frozenset({"app-jhb1-1", "app-jhb1-2"}))
    with pytest.raises(PlanError) as refused:
        plan_drain(lab_state(), "app-cpt1-1", closures=closed)
    text = str(refused.value)
    assert "drain of app-cpt1-1 refused, nothing moved" in text
    assert "table-bay-fisheries (allowed: ZA)" in text
    assert "app-lon1-1 is in GB, not allowed" in text
    assert "app-jhb1-2 is drained" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_util": 0}, "above 0 and at most 1"),
        ({"target_util": 1.5}, "above 0 and at most 1"),
        ({"target_util": float("nan")}, "above 0 and at most 1"),
        ({"max_moves": -1}, "non-negative"),
        ({"dc": "nowhere"}, "no data centre 'nowhere'"),
    ],
)
def test_bad_rebalance_requests_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan_rebalance(lab_state(), **kwargs)


@pytest.mark.parametrize(
    ("server", "kwargs", "message"),
    [
        ("app-nowhere", {}, "not a server"),
        ("mirror-jhb1-1", {}, "is a mirror server"),
        ("app-jhb1-1", {"to_dc": "jhb1", "to_server": "app-jhb1-2"}, "not both"),
        ("app-jhb1-1", {"to_server": "app-jhb1-1"}, "cannot take clients"),
        ("app-jhb1-1", {"to_server": "mirror-cpt1-1"}, "cannot take clients"),
    ],
)
def test_bad_drain_requests_are_refused(server: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan_drain(lab_state(), server, **kwargs)


def test_a_down_server_cannot_be_drained() -> None:
    state = lab_state()
    down = FleetState(state.fleet, {}, state.snapshots, NOW, frozenset({"app-jhb1-1"}))
    with pytest.raises(PlanError, match="is down"):
        plan_drain(down, "app-jhb1-1")


def rpm_state(rpm_caps: dict[str, int]) -> FleetState:
    """The lab-like fleet with ``capacity.rpm`` on the app servers named in *rpm_caps*."""
    data = lab_like_data()
    for server in data["servers"]:
        if server["id"] in rpm_caps:
            server["capacity"]["rpm"] = rpm_caps[server["id"]]
    fleet = parse_fleet(yaml.safe_dump(data), "fleet.yaml")
    return FleetState(fleet, {}, mirrored(fleet, size=GB), NOW)


LOADS = {"acme-mining": 300, "karoo-logistics": 200, "ubuntu-health": 50}


def test_load_over_target_moves_the_cheapest_client_and_is_printed_now_and_after() -> None:
    state = rpm_state({"app-jhb1-1": 500, "app-jhb1-2": 500})
    result = plan_rebalance(state, closures=Closures(rpm=LOADS))  # 500 rpm > 400
    assert result.plan is not None and result.overloads == ()
    [move] = result.plan.moves
    assert move.from_server == "app-jhb1-1" and move.to_server == "app-jhb1-2"
    table = result.render()
    assert "rpm now -> after / cap" in table
    assert "app-jhb1-1  jhb1  2 -> 1 / 10" in table
    assert "/ 500" in table and "/ unlimited" in table  # cpt1 and lon1 declare no rpm
    # Without capacity.rpm a server is not limited on load: nothing to move.
    assert plan_rebalance(rpm_state({}), closures=Closures(rpm=LOADS)).plan is None


def test_load_that_fits_nowhere_is_named_by_dimension() -> None:
    state = rpm_state({"app-jhb1-1": 500, "app-jhb1-2": 100, "app-cpt1-1": 100})
    result = plan_rebalance(state, closures=Closures(rpm=LOADS))
    [over] = result.overloads
    assert (over.server_id, over.dimension) == ("app-jhb1-1", "rpm")
    assert "stays over target in rpm: 100% (500 rpm of 500 rpm" in over.describe()
    assert "app-jhb1-2 has no room under target (rpm: 80 rpm at most)" in over.reason
    with pytest.raises(PlanError, match=r"app-jhb1-2 has no room under target \(rpm"):
        plan_drain(state, "app-jhb1-1", closures=Closures(rpm=LOADS))


@pytest.mark.parametrize("bad", [-1, 1.5, True, "60"])
def test_a_bad_load_figure_is_refused(bad: object) -> None:
    with pytest.raises(PlanError, match="requests per minute of acme-mining"):
        plan_rebalance(rpm_state({}), closures=Closures(rpm={"acme-mining": bad}))  # type: ignore[dict-item]


def test_neither_a_drain_nor_a_rebalance_moves_clients_onto_a_scratch_server() -> None:
    scratch = "drill-20261206-175500-1"
    servers = (*LAB_SERVERS, (scratch, "jhb1", "app", ("mirror-jhb1-1", "mirror-cpt1-1"), 50, 1000))
    fleet = parse_fleet(yaml.safe_dump(lab_like_data(servers=servers)), "fleet.yaml")
    state = FleetState(fleet, {}, mirrored(fleet, size=GB), NOW)
    drained = plan_drain(state, "app-jhb1-1", to_dc="jhb1").plan
    assert drained is not None and drained.moves
    assert scratch not in {m.to_server for m in drained.moves}
    with pytest.raises(PlanError, match="cannot take clients"):
        plan_drain(state, "app-jhb1-1", to_server=scratch)
    moved = plan_rebalance(state, target_util=0.05).plan
    assert moved is None or scratch not in {m.to_server for m in moved.moves}
