"""The fault names: every issue-10 name known, the built ones selectable, the rest
refused by name with the list of implemented ones; targets drawn by the seed."""

from __future__ import annotations

import random

import pytest

from ppo_dr.errors import LabError, PermanentError
from ppo_dr.lab.chaos.catalogue import BY_NAME, CATALOGUE, CI_TIER, implemented, select_faults
from ppo_dr.lab.chaos.sequence import clients_per_server, pick_target
from ppo_dr.lab.labdir import FAULTS

#: The faults built so far, in catalogue order.
BUILT = [
    "power",
    "hang",
    "bitflip",
    "channel-errors",
    "flapping",
    "orchestrator-kill",
    "disk",
    "network",
    "mirror-dies",
    "truncate-pack",
    "latency",
    "host-key-change",
    "mirror-disk-full",
    "clock-skew",
    "store-restart",
    "prefect-server-kill",
    "dc",
]
IMPLEMENTED = "implemented: " + ", ".join(BUILT)
ISSUE_NAMES = [
    "power",
    "hang",
    "disk",
    "network",
    "dc",
    "mirror-dies",
    "orchestrator-kill",
    "prefect-server-kill",
    "store-restart",
    "bitflip",
    "truncate-pack",
    "channel-errors",
    "mirror-disk-full",
    "latency",
    "clock-skew",
    "flapping",
    "host-key-change",
]


def test_the_catalogue_names_every_fault_of_the_issue_once() -> None:
    assert sorted(BY_NAME) == sorted(ISSUE_NAMES)
    assert len(CATALOGUE) == len(ISSUE_NAMES)
    assert set(CI_TIER) <= set(BY_NAME)


def test_implemented_faults_use_a_fault_the_lab_can_inject() -> None:
    built = implemented()
    assert built == BUILT
    for name in built:
        # a damaged pack and a killed orchestrator are the chaos run's own doing
        if BY_NAME[name].shape not in ("integrity", "orchestrator-kill", "channel-errors"):
            assert BY_NAME[name].lab_fault in FAULTS


def test_all_selects_every_implemented_fault_in_catalogue_order() -> None:
    assert [s.name for s in select_faults("all")] == implemented()


def test_names_are_selected_in_the_order_given() -> None:
    assert [s.name for s in select_faults("hang, power")] == ["hang", "power"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("no-such-fault", "unknown fault 'no-such-fault'"),
        ("powr", "unknown fault 'powr'"),
        ("power,,hang", "an empty name"),
        ("", "an empty name"),
        ("power,power", "twice"),
        ("all,power", "unknown fault 'all'"),
    ],
)
def test_bad_fault_lists_are_refused_naming_the_implemented_ones(text: str, says: str) -> None:
    with pytest.raises(PermanentError) as caught:
        select_faults(text)
    assert says in str(caught.value)
    if "twice" not in says:
        assert IMPLEMENTED in str(caught.value)


def test_only_servers_holding_clients_are_drawn_and_the_seed_decides() -> None:
    placements = {"a": "app-1", "b": "app-1", "c": "app-2"}
    servers = ["app-1", "app-2", "spare-1"]
    assert clients_per_server(placements) == {"app-1": 2, "app-2": 1}
    drawn = {pick_target(placements, servers, random.Random(seed)) for seed in range(40)}
    assert drawn == {"app-1", "app-2"}
    again = [pick_target(placements, list(reversed(servers)), random.Random(7)) for _ in range(3)]
    assert again == [pick_target(placements, servers, random.Random(7))] * 3


def test_a_fleet_without_placed_clients_has_no_target() -> None:
    with pytest.raises(LabError, match="no app server holds a client"):
        pick_target({"a": "mirror-1"}, ["app-1"], random.Random(1))
