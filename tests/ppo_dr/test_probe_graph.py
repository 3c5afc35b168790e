"""Inhibition: one outage per cause (client, app server or whole DC), with stable keys."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppo_dr.inventory import load_fleet
from ppo_dr.probe import (
    FleetGraph,
    Observation,
    Outage,
    OutagePolicy,
    OutageTracker,
    TargetState,
    TargetStatus,
    client_target,
    fleet_checks,
    outages,
    server_target,
)

FLEET = load_fleet(Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml")
GRAPH = FleetGraph.from_fleet(FLEET)
T0 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
JHB1_1 = ("acme-mining", "karoo-logistics")


def st_(target: str, state: TargetState, first: datetime | None = T0) -> TargetStatus:
    if state is TargetState.UP:
        first = None
    return TargetStatus(target, state, first, first)


def down(*targets: str, first: datetime = T0) -> dict[str, TargetStatus]:
    return {t: st_(t, TargetState.DOWN, first) for t in targets}


def test_graph_from_fleet() -> None:
    assert GRAPH.dc_servers == {
        "cpt1": ("app-cpt1-1",),
        "jhb1": ("app-jhb1-1", "app-jhb1-2", "spare-jhb1-1"),
        "lon1": ("app-lon1-1", "spare-lon1-1"),
    }
    assert GRAPH.witnesses == {"spare-jhb1-1", "spare-lon1-1"}  # idle spares
    assert GRAPH.clients_on("app-jhb1-1") == JHB1_1


def test_server_down_is_one_outage_naming_its_clients() -> None:
    states = down(server_target("app-jhb1-1"), *map(client_target, JHB1_1))
    assert outages(states, GRAPH) == [
        Outage("outage:server:app-jhb1-1", "server", "app-jhb1-1", JHB1_1, T0)
    ]


def test_server_down_names_clients_even_before_their_own_checks_fail() -> None:
    (only,) = outages(down(server_target("app-jhb1-1")), GRAPH)
    assert only.clients == JHB1_1


def test_whole_dc_down_is_one_outage() -> None:
    states = down(
        server_target("app-jhb1-1"),
        server_target("app-jhb1-2"),
        server_target("spare-jhb1-1"),
        *map(client_target, ("acme-mining", "karoo-logistics", "ubuntu-health")),
    )
    states[server_target("app-jhb1-2")] = st_(
        server_target("app-jhb1-2"), TargetState.RECOVERING, T0 - timedelta(seconds=5)
    )
    assert outages(states, GRAPH) == [
        Outage(
            "outage:dc:jhb1",
            "dc",
            "jhb1",
            ("acme-mining", "karoo-logistics", "ubuntu-health"),
            T0 - timedelta(seconds=5),
        )
    ]


def test_a_dc_with_one_checked_server_is_a_server_outage() -> None:
    """Cape Town has one app server and no spare: nothing tells its loss from the DC's."""
    (only,) = outages(down(server_target("app-cpt1-1")), GRAPH)
    assert (only.key, only.clients) == ("outage:server:app-cpt1-1", ("table-bay-fisheries",))


def test_a_dc_with_one_app_server_and_its_spare_down_is_a_dc_outage() -> None:
    """London has one app server; its idle spare is the second witness. Before, London's
    loss was a server outage unless a failover had left clients on the spare."""
    states = down(server_target("app-lon1-1"), server_target("spare-lon1-1"))
    assert outages(states, GRAPH) == [
        Outage("outage:dc:lon1", "dc", "lon1", ("thames-advisory",), T0)
    ]


def test_a_dc_is_not_down_while_its_spare_answers() -> None:
    (only,) = outages(down(server_target("app-lon1-1")), GRAPH)
    assert (only.key, only.clients) == ("outage:server:app-lon1-1", ("thames-advisory",))


def test_an_idle_spare_down_is_no_outage() -> None:
    assert outages(down(server_target("spare-lon1-1")), GRAPH) == []


def test_a_pending_spare_holds_back_its_dc_sibling() -> None:
    """The spare and the app server failed together: London may be going as a whole,
    so wait a cycle rather than page for the server and then for the DC."""
    states = down(server_target("app-lon1-1"))
    spare = server_target("spare-lon1-1")
    states[spare] = st_(spare, TargetState.PENDING, T0 + timedelta(seconds=1))
    assert outages(states, GRAPH) == []


def test_single_client_failure_is_a_client_outage() -> None:
    states = down(client_target("karoo-logistics"))
    states[server_target("app-jhb1-1")] = st_(server_target("app-jhb1-1"), TargetState.UP)
    assert outages(states, GRAPH) == [
        Outage(
            "outage:client:karoo-logistics", "client", "karoo-logistics", ("karoo-logistics",), T0
        )
    ]


def test_pending_server_that_failed_with_the_client_holds_it_back() -> None:
    states = down(client_target("karoo-logistics"))
    states[server_target("app-jhb1-1")] = st_(
        server_target("app-jhb1-1"), TargetState.PENDING, T0 + timedelta(seconds=2)
    )
    assert outages(states, GRAPH) == []
    # a flapping server, pending only since long after the client failed, holds nothing
    states[server_target("app-jhb1-1")] = st_(
        server_target("app-jhb1-1"), TargetState.PENDING, T0 + timedelta(minutes=5)
    )
    assert [o.key for o in outages(states, GRAPH)] == ["outage:client:karoo-logistics"]


def test_pending_dc_sibling_holds_back_the_server_outage() -> None:
    states = down(server_target("app-jhb1-1"))
    states[server_target("app-jhb1-2")] = st_(
        server_target("app-jhb1-2"), TargetState.PENDING, T0 + timedelta(seconds=1)
    )
    assert outages(states, GRAPH) == []


def test_placements_override_fleet_homes() -> None:
    graph = FleetGraph.from_fleet(FLEET, {"karoo-logistics": "app-lon1-1"})
    (only,) = outages(down(server_target("app-lon1-1")), graph)
    assert only.clients == ("karoo-logistics", "thames-advisory")
    # and a spare that now hosts clients is checked
    graph = FleetGraph.from_fleet(FLEET, {"karoo-logistics": "spare-lon1-1"})
    assert graph.server_dc["spare-lon1-1"] == "lon1"
    (only,) = outages(down(server_target("spare-lon1-1")), graph)
    assert only.clients == ("karoo-logistics",)


TARGETS = [server_target(s) for s in GRAPH.server_dc] + [
    client_target(c) for c in GRAPH.client_server
]
settled = st.sampled_from([TargetState.UP, TargetState.DOWN, TargetState.RECOVERING])


@given(st.lists(settled, min_size=len(TARGETS), max_size=len(TARGETS)), st.randoms())
def test_every_client_in_outage_is_named_exactly_once_and_keys_are_stable(
    states: list[TargetState], rnd: random.Random
) -> None:
    statuses = {t: st_(t, s) for t, s in zip(TARGETS, states, strict=True)}
    found = outages(statuses, GRAPH)
    shuffled = list(statuses.items())
    rnd.shuffle(shuffled)
    assert outages(dict(shuffled), GRAPH) == found  # order of states does not matter
    named = [c for o in found for c in o.clients]
    assert len(named) == len(set(named))
    for client, server in GRAPH.client_server.items():
        if (
            statuses[client_target(client)].state.in_outage
            or statuses[server_target(server)].state.in_outage
        ):
            assert client in named
    assert len({o.key for o in found}) == len(found)
    for o in found:
        assert o.key == f"outage:{o.level}:{o.subject_id}"


@pytest.mark.parametrize("front_door", [None, "http://127.0.0.1:8000/"])
def test_fleet_checks(front_door: str | None) -> None:
    checks = {c.target_id: c for c in fleet_checks(FLEET, front_door=front_door)}
    assert set(checks) == set(TARGETS)
    server = checks[server_target("app-jhb1-1")]
    assert getattr(server, "url", "") == "http://app1.jhb1.ppo.example:8080/health"
    client = checks[client_target("acme-mining")]
    expected = (
        "https://acme-mining.ppo.example/"
        if front_door is None
        else "http://127.0.0.1:8000/c/acme-mining/health"
    )
    assert getattr(client, "url", "") == expected


# ----------------------------------------------------------------------------- end to end


def run_outage(failing_from: dict[str, int], cycles: int = 40) -> set[str]:
    """Lab timings (probe every 2 s, 20 s threshold): targets fail from the given cycle
    on; every key outages() reports in any cycle, as the probe flow would see them."""
    tracker = OutageTracker(OutagePolicy(threshold=timedelta(seconds=20), recovery_successes=2))
    keys: set[str] = set()
    for cycle in range(cycles):
        at = T0 + timedelta(seconds=2 * cycle)
        tracker.feed(
            Observation(t, cycle < failing_from.get(t, cycles + 1), 1.0, "r", at) for t in TARGETS
        )
        keys |= {o.key for o in outages(tracker.statuses, GRAPH)}
    return keys


@given(st.lists(st.integers(min_value=5, max_value=6), min_size=3, max_size=3))
def test_a_killed_server_is_one_outage_even_if_clients_fail_a_cycle_apart(
    starts: list[int],
) -> None:
    server, *clients = starts
    failing = {server_target("app-jhb1-1"): server}
    failing.update({client_target(c): s for c, s in zip(JHB1_1, clients, strict=True)})
    assert run_outage(failing) == {"outage:server:app-jhb1-1"}


@given(st.lists(st.integers(min_value=5, max_value=6), min_size=6, max_size=6))
def test_a_killed_dc_is_one_outage(starts: list[int]) -> None:
    names = [
        server_target("app-jhb1-1"),
        server_target("app-jhb1-2"),
        server_target("spare-jhb1-1"),
        *map(client_target, ("acme-mining", "karoo-logistics", "ubuntu-health")),
    ]
    assert run_outage(dict(zip(names, starts, strict=True))) == {"outage:dc:jhb1"}
