"""The failover planner, case by case: sources, targets, residency, capacity, provisioning."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ppo_dr.errors import PermanentError, UnsafeInputError
from ppo_dr.failover.plan import (
    ClientMove,
    FleetState,
    Plan,
    PlanError,
    Scope,
    SnapshotInfo,
    Target,
    mirrors_for,
    plan_failover,
    template_capacity,
)
from ppo_dr.inventory import Fleet, parse_fleet
from ppo_dr.lab import topology
from tests.ppo_dr.failover.fleets import (
    GB,
    HOST_KEY,
    LAB_CLIENTS,
    LAB_SERVERS,
    NOW,
    fleet_from,
    lab_like,
    lab_like_data,
    mirrored,
    snap,
)

JHB1 = frozenset({"app-jhb1-1", "app-jhb1-2", "mirror-jhb1-1", "spare-jhb1-1"})


def state(
    fleet: Fleet,
    snapshots: list[SnapshotInfo] | None = None,
    *,
    down: frozenset[str] = frozenset(),
    provisionable: frozenset[str] = frozenset(),
    placements: dict[str, str] | None = None,
) -> FleetState:
    return FleetState(
        fleet=fleet,
        placements=placements or {},
        snapshots=mirrored(fleet) if snapshots is None else snapshots,
        now=NOW,
        down=down,
        provisionable=provisionable,
    )


def move_of(plan: Plan, client: str) -> ClientMove:
    (move,) = [m for m in plan.moves if m.client_id == client]
    return move


def reason_of(plan: Plan, client: str) -> str:
    (refusal,) = [r for r in plan.refusals if r.client_id == client]
    return refusal.reason


# --------------------------------------------------------------------------- sources


def test_on_site_mirror_is_preferred_when_equally_fresh() -> None:
    fleet = lab_like()
    plan = plan_failover(state(fleet), Scope(clients=("acme-mining",)), Target())
    move = move_of(plan, "acme-mining")
    assert move.source_mirror == "mirror-jhb1-1"
    assert move.fallback_mirrors == ("mirror-cpt1-1",)
    assert move.snapshot_at == NOW - timedelta(minutes=30)


def test_a_fresher_off_site_snapshot_beats_a_stale_on_site_one() -> None:
    fleet = lab_like()
    snaps = [
        snap("acme-mining", "mirror-jhb1-1", 90, snapshot_id="old"),
        snap("acme-mining", "mirror-cpt1-1", 20, snapshot_id="new", size=3 * GB),
    ]
    move = move_of(
        plan_failover(state(fleet, snaps), Scope(clients=("acme-mining",)), Target()),
        "acme-mining",
    )
    assert (move.source_mirror, move.snapshot_id) == ("mirror-cpt1-1", "new")
    assert move.fallback_mirrors == ("mirror-jhb1-1",)
    assert move.size_bytes == 3 * GB


def test_unverified_snapshots_are_ignored() -> None:
    fleet = lab_like()
    snaps = [
        snap("acme-mining", "mirror-jhb1-1", 5, verified=False, snapshot_id="fresh-unverified"),
        snap("acme-mining", "mirror-jhb1-1", 120, snapshot_id="old-verified"),
        snap("acme-mining", "mirror-cpt1-1", 60, snapshot_id="off-verified"),
    ]
    move = move_of(
        plan_failover(state(fleet, snaps), Scope(clients=("acme-mining",)), Target()),
        "acme-mining",
    )
    assert (move.source_mirror, move.snapshot_id) == ("mirror-cpt1-1", "off-verified")
    assert move.fallback_mirrors == ("mirror-jhb1-1",)


def test_down_mirrors_are_ignored() -> None:
    fleet = lab_like()
    snaps = [
        snap("acme-mining", "mirror-jhb1-1", 5, snapshot_id="on-site"),
        snap("acme-mining", "mirror-cpt1-1", 60, snapshot_id="off-site"),
    ]
    plan = plan_failover(
        state(fleet, snaps, down=frozenset({"mirror-jhb1-1"})),
        Scope(clients=("acme-mining",)),
        Target(),
    )
    move = move_of(plan, "acme-mining")
    assert (move.source_mirror, move.snapshot_id, move.fallback_mirrors) == (
        "mirror-cpt1-1",
        "off-site",
        (),
    )


def test_no_verified_snapshot_on_a_reachable_mirror_is_refused_with_the_reason() -> None:
    fleet = lab_like()
    snaps = [
        snap("acme-mining", "mirror-jhb1-1", 5),
        snap("acme-mining", "mirror-cpt1-1", 5, verified=False),
    ]
    plan = plan_failover(
        state(fleet, snaps, down=frozenset({"mirror-jhb1-1", "app-jhb1-1"})),
        Scope(server="app-jhb1-1"),
        Target(),
    )
    assert reason_of(plan, "acme-mining") == (
        "no verified snapshot on a reachable mirror (mirror-jhb1-1 is down; "
        "mirror-cpt1-1 holds only unverified snapshots)"
    )
    assert "no mirror has a snapshot of it catalogued" in reason_of(plan, "karoo-logistics")
    assert plan.moves == ()


# --------------------------------------------------------------------------- targets


def test_a_lost_server_moves_to_another_dc_in_the_same_country_spreading_load() -> None:
    fleet = lab_like()
    plan = plan_failover(
        state(fleet, down=frozenset({"app-jhb1-1"})), Scope(server="app-jhb1-1"), Target()
    )
    assert plan.refusals == ()
    targets = {m.client_id: m.to_server for m in plan.moves}
    # cpt1 (ZA, not the down server's DC); least loaded first: the empty spare takes the
    # bigger client, then app-cpt1-1 (1 client of 10) is less loaded than the spare.
    assert targets == {"acme-mining": "spare-cpt1-1", "karoo-logistics": "app-cpt1-1"}
    assert move_of(plan, "karoo-logistics").new_mirrors == ("mirror-cpt1-1", "mirror-jhb1-1")
    # The spare has no declared mirrors: derived on-site + off-site in the same country.
    assert move_of(plan, "acme-mining").new_mirrors == ("mirror-cpt1-1", "mirror-jhb1-1")
    assert plan.provisions == ()


def test_an_up_source_may_move_within_its_dc() -> None:
    fleet = lab_like()
    plan = plan_failover(state(fleet), Scope(clients=("ubuntu-health",)), Target())
    # Not down, so the same DC is not avoided: the empty spare is the least loaded.
    assert move_of(plan, "ubuntu-health").to_server == "spare-jhb1-1"


def test_whole_dc_loss_restores_from_off_site_mirrors_into_an_allowed_dc() -> None:
    fleet = lab_like()
    plan = plan_failover(
        state(fleet, down=JHB1, provisionable=frozenset({"jhb1", "lon1"})),
        Scope(dc="jhb1"),
        Target(),
    )
    assert plan.refusals == ()
    assert {m.client_id for m in plan.moves} == {"acme-mining", "karoo-logistics", "ubuntu-health"}
    for move in plan.moves:
        assert move.source_mirror == "mirror-cpt1-1"
        assert fleet.server(move.to_server).dc == "cpt1"
        assert move.fallback_mirrors == ()
    # jhb1 is lost: nothing is provisioned there, and ZA-only clients never go to lon1.
    assert plan.provisions == ()
    degraded = move_of(plan, "acme-mining")
    assert degraded.to_server == "spare-cpt1-1"
    assert degraded.new_mirrors == ("mirror-cpt1-1",)  # no surviving off-site ZA mirror
    assert "(degraded: no off-site mirror)" in plan.render()


def test_a_za_only_client_with_no_surviving_za_dc_is_refused_with_the_reason() -> None:
    fleet = lab_like()
    down = JHB1 | {"app-cpt1-1", "spare-cpt1-1"}  # cpt1's mirror survives, its servers not
    plan = plan_failover(
        state(fleet, down=down, provisionable=frozenset({"lon1"})), Scope(dc="jhb1"), Target()
    )
    assert plan.moves == ()
    reason = reason_of(plan, "acme-mining")
    assert reason.startswith("no allowed target (allowed countries: ZA): ")
    for why in (
        "app-cpt1-1 is down",
        "spare-cpt1-1 is down",
        "app-lon1-1 is in GB, not allowed",
        "spare-lon1-1 is in GB, not allowed",
        "a new server in lon1 is in GB, not allowed",
        "data centre cpt1 (static) cannot provision",
    ):
        assert why in reason
    assert "refused (escalate):" in plan.render()


def test_a_client_allowing_gb_goes_there_when_za_is_gone() -> None:
    clients = (*LAB_CLIENTS, ("jozi-global", "app-jhb1-2", ("ZA", "GB"), 1))
    fleet = lab_like(clients=clients)
    down = JHB1 | {"app-cpt1-1", "spare-cpt1-1"}
    plan = plan_failover(state(fleet, down=down), Scope(dc="jhb1"), Target())
    move = move_of(plan, "jozi-global")
    assert move.to_server == "spare-lon1-1"  # app-lon1-1 is declared with a down mirror
    assert move.new_mirrors == ("mirror-lon1-1", "mirror-cpt1-1")
    assert {r.client_id for r in plan.refusals} == {
        "acme-mining",
        "karoo-logistics",
        "ubuntu-health",
    }


def test_an_explicit_target_server_refuses_clients_it_may_not_take() -> None:
    clients = (*LAB_CLIENTS, ("jozi-global", "app-jhb1-2", ("ZA", "GB"), 1))
    fleet = lab_like(clients=clients)
    plan = plan_failover(state(fleet), Scope(server="app-jhb1-2"), Target(server="app-lon1-1"))
    assert move_of(plan, "jozi-global").to_server == "app-lon1-1"
    assert reason_of(plan, "ubuntu-health") == (
        "no allowed target in target server app-lon1-1 (allowed countries: ZA): "
        "app-lon1-1 is in GB, not allowed"
    )


def test_an_explicit_target_dc_or_country_restricts_the_candidates() -> None:
    fleet = lab_like()
    by_dc = plan_failover(state(fleet), Scope(server="app-jhb1-1"), Target(dc="jhb1"))
    assert {m.to_server for m in by_dc.moves} <= {"app-jhb1-2", "spare-jhb1-1"}
    by_country = plan_failover(
        state(fleet), Scope(clients=("thames-advisory",)), Target(country="ZA")
    )
    assert fleet.country_of(move_of(by_country, "thames-advisory").to_server) == "ZA"


def test_a_target_in_a_country_no_client_of_the_scope_allows_is_an_error() -> None:
    fleet = lab_like()
    with pytest.raises(PlanError, match="no client of server app-jhb1-1 allows GB"):
        plan_failover(state(fleet), Scope(server="app-jhb1-1"), Target(country="GB"))
    with pytest.raises(PlanError, match="allows GB"):
        plan_failover(state(fleet), Scope(server="app-jhb1-1"), Target(server="spare-lon1-1"))


# --------------------------------------------------------------------------- capacity


def test_capacity_in_clients_is_never_exceeded_and_the_rest_are_refused() -> None:
    one_each = [
        (sid, dc, role, mirrors, 1 if role != "mirror" else 0, disk)
        for sid, dc, role, mirrors, _, disk in LAB_SERVERS
    ]
    clients = (
        ("acme-mining", "app-jhb1-1", ("ZA",), 4),
        ("ubuntu-health", "app-jhb1-2", ("ZA",), 3),
        ("table-bay-fisheries", "app-cpt1-1", ("ZA",), 1),
    )
    fleet = lab_like(servers=one_each, clients=clients)
    plan = plan_failover(
        state(fleet, down=frozenset({"app-jhb1-1"})), Scope(server="app-jhb1-1"), Target()
    )
    assert move_of(plan, "acme-mining").to_server == "spare-cpt1-1"
    no_spares = lab_like(servers=[s for s in one_each if s[2] != "spare"], clients=clients)
    plan = plan_failover(
        state(no_spares, down=frozenset({"app-jhb1-1"})), Scope(server="app-jhb1-1"), Target()
    )
    assert reason_of(plan, "acme-mining") == (
        "no allowed target (allowed countries: ZA): app-jhb1-1 is down; "
        "app-jhb1-2 full (1/1 clients); app-cpt1-1 full (1/1 clients); "
        "app-lon1-1 is in GB, not allowed; data centre jhb1 (lab) cannot provision; "
        "data centre cpt1 (static) cannot provision"
    )


def test_disk_capacity_counts_placed_clients_and_the_newest_snapshot_size() -> None:
    servers = tuple(
        (sid, dc, role, mirrors, n, 10 if role != "mirror" else disk)
        for sid, dc, role, mirrors, n, disk in LAB_SERVERS
    )
    fleet = lab_like(servers=servers, clients=[(*c[:3], 1) for c in LAB_CLIENTS])
    snaps = mirrored(fleet, size=GB)
    # table-bay-fisheries grew to 8 GB (newest snapshot); app-cpt1-1 has 2 GB free.
    snaps += [snap("table-bay-fisheries", "mirror-cpt1-1", 1, size=8 * GB)]
    snaps += [snap("acme-mining", m, 10, size=5 * GB) for m in ("mirror-jhb1-1", "mirror-cpt1-1")]
    plan = plan_failover(
        state(fleet, snaps, down=frozenset({"app-jhb1-1", "spare-cpt1-1"})),
        Scope(clients=("acme-mining",)),
        Target(dc="cpt1"),
    )
    assert reason_of(plan, "acme-mining") == (
        "no allowed target in target data centre cpt1 (allowed countries: ZA): "
        "app-cpt1-1 full (needs 5.0 GB, 2.0 GB free); spare-cpt1-1 is down; "
        "data centre cpt1 (static) cannot provision"
    )


def test_sizes_fall_back_to_the_fleet_when_nothing_is_catalogued_yet() -> None:
    fleet = lab_like()
    plan = plan_failover(state(fleet, []), Scope(clients=("acme-mining",)), Target(), "planned")
    assert move_of(plan, "acme-mining").size_bytes == 4 * GB


def test_new_servers_are_provisioned_when_existing_ones_lack_room() -> None:
    servers = tuple(
        (sid, dc, role, mirrors, 2 if role != "mirror" else 0, disk)
        for sid, dc, role, mirrors, _, disk in LAB_SERVERS
    )
    clients = [(f"za-{i}", "app-jhb1-1", ("ZA",), 1) for i in range(2)]
    clients += [(f"za-{i}", "app-jhb1-2", ("ZA",), 1) for i in range(2, 4)]
    clients += [("cpt-0", "app-cpt1-1", ("ZA",), 1), ("cpt-1", "spare-cpt1-1", ("ZA",), 1)]
    clients = [c for c in clients if not c[1].startswith("spare")]
    fleet = lab_like(servers=servers, clients=clients)
    args = (
        state(
            fleet,
            down=JHB1 - {"mirror-jhb1-1"},
            provisionable=frozenset({"cpt1"}),
            placements={"cpt-0": "app-cpt1-1"},
        ),
        Scope(dc="jhb1"),
        Target(),
    )
    plan = plan_failover(*args)
    assert plan.refusals == ()
    # app-cpt1-1 has room for 1, spare-cpt1-1 for 2: one new server takes the fourth.
    assert len(plan.provisions) == 1
    (new,) = plan.provisions
    assert new.dc == "cpt1" and new.template == "app"
    assert new.server_id.startswith("app-cpt1-") and new.server_id.endswith("-1")
    assert new.mirrors == ("mirror-cpt1-1", "mirror-jhb1-1")
    placed = [m.to_server for m in plan.moves]
    assert sorted(placed) == sorted(["app-cpt1-1", "spare-cpt1-1", "spare-cpt1-1", new.server_id])
    assert template_capacity(fleet).clients == 2
    # A rerun of the same request asks for the same server: providers are idempotent by id.
    again = plan_failover(*args)
    assert again.provisions == plan.provisions and again.plan_id == plan.plan_id
    assert plan_failover(*args[:2], Target(dc="cpt1")).provisions[0].server_id != new.server_id


def test_a_client_larger_than_a_new_server_is_refused_not_provisioned_forever() -> None:
    fleet = fleet_from(lab_like_data(clients=(("huge", "app-jhb1-1", ("ZA",), 500),)))
    snaps = mirrored(fleet, size=500 * GB)
    plan = plan_failover(
        state(fleet, snaps, down=frozenset({"app-jhb1-1"}), provisionable=frozenset({"jhb1"})),
        Scope(clients=("huge",)),
        Target(),
    )
    assert plan.provisions == () and plan.moves == ()
    assert "a new server in jhb1 full (needs 500.0 GB, 100.0 GB free)" in reason_of(plan, "huge")


# --------------------------------------------------------------------------- planned mode


def test_planned_mode_syncs_from_the_source_pair_without_a_snapshot() -> None:
    fleet = lab_like()
    plan = plan_failover(
        state(fleet), Scope(server="app-lon1-1"), Target(country="ZA"), mode="planned"
    )
    move = move_of(plan, "thames-advisory")
    assert (move.source_mirror, move.fallback_mirrors) == ("mirror-lon1-1", ("mirror-jhb1-1",))
    assert move.snapshot_id is None and move.snapshot_at is None
    assert fleet.country_of(move.to_server) == "ZA"
    assert "final sync" in plan.render()


def test_planned_mode_refuses_a_client_whose_server_is_down() -> None:
    fleet = lab_like()
    plan = plan_failover(
        state(fleet, down=frozenset({"app-lon1-1"})),
        Scope(server="app-lon1-1"),
        Target(),
        "planned",
    )
    assert "planned mode needs its server app-lon1-1 up" in reason_of(plan, "thames-advisory")


# --------------------------------------------------------------------------- mirrors_for


def test_mirrors_for_keeps_declared_mirrors_and_derives_the_rest() -> None:
    fleet = lab_like()
    assert mirrors_for(fleet, "app-lon1-1") == ("mirror-lon1-1", "mirror-jhb1-1")
    assert mirrors_for(fleet, "spare-jhb1-1") == ("mirror-jhb1-1", "mirror-cpt1-1")
    assert mirrors_for(fleet, "spare-lon1-1") == ("mirror-lon1-1", "mirror-cpt1-1")
    assert mirrors_for(fleet, "spare-lon1-1", countries=["GB"]) == ("mirror-lon1-1",)
    assert mirrors_for(
        fleet, "spare-cpt1-1", down=frozenset({"mirror-jhb1-1"}), countries=["ZA", "GB"]
    ) == ("mirror-cpt1-1", "mirror-lon1-1")
    # Off-site: the same country first, then by country code and DC (order-insensitive).
    assert mirrors_for(fleet, "app-new-1", dc="lon1", countries=["ZA", "GB"]) == (
        "mirror-lon1-1",
        "mirror-cpt1-1",
    )
    assert mirrors_for(fleet, "app-new-1", dc="lon1", countries=["GB", "ZA"]) == (
        "mirror-lon1-1",
        "mirror-cpt1-1",
    )
    assert mirrors_for(fleet, "app-new-1", dc="jhb1") == ("mirror-jhb1-1", "mirror-cpt1-1")


def test_declared_mirrors_come_on_site_first_whatever_their_order_in_the_file() -> None:
    servers = [
        (sid, dc, role, tuple(reversed(mirrors)), n, disk)
        for sid, dc, role, mirrors, n, disk in LAB_SERVERS
    ]
    fleet = lab_like(servers=servers)
    assert fleet.server("app-jhb1-1").mirrors == ("mirror-cpt1-1", "mirror-jhb1-1")
    assert mirrors_for(fleet, "app-jhb1-1") == ("mirror-jhb1-1", "mirror-cpt1-1")
    plan = plan_failover(state(fleet), Scope(clients=("acme-mining",)), Target(), "planned")
    move = move_of(plan, "acme-mining")
    assert (move.source_mirror, move.fallback_mirrors) == ("mirror-jhb1-1", ("mirror-cpt1-1",))


def test_mirrors_for_refuses_what_it_cannot_answer() -> None:
    fleet = lab_like()
    with pytest.raises(PlanError, match="name the data centre"):
        mirrors_for(fleet, "app-new-1")
    with pytest.raises(PlanError, match="is a mirror server"):
        mirrors_for(fleet, "mirror-jhb1-1")
    with pytest.raises(PlanError, match="no data centre 'nowhere'"):
        mirrors_for(fleet, "app-new-1", dc="nowhere")
    with pytest.raises(PlanError, match="in data centre 'jhb1', not 'lon1'"):
        mirrors_for(fleet, "spare-jhb1-1", dc="lon1")
    with pytest.raises(UnsafeInputError):
        mirrors_for(fleet, "../etc")


# --------------------------------------------------------------------------- identity and JSON


def test_the_same_inputs_give_the_same_plan_id_whatever_the_time() -> None:
    fleet = lab_like()
    args = (state(fleet, down=JHB1), Scope(dc="jhb1"), Target())
    first = plan_failover(*args)
    later = plan_failover(replace(args[0], now=NOW + timedelta(minutes=5)), *args[1:])
    assert later.plan_id == first.plan_id and later.moves == first.moves
    assert later.created_at != first.created_at
    other = plan_failover(args[0], Scope(dc="jhb1"), Target(country="ZA"))
    assert other.plan_id != first.plan_id
    assert len(first.plan_id) >= 12 and int(first.plan_id, 16) >= 0


def test_json_round_trip_and_tampering_is_refused() -> None:
    fleet = lab_like()
    plan = plan_failover(
        state(fleet, down=JHB1, provisionable=frozenset({"cpt1"})), Scope(dc="jhb1"), Target()
    )
    assert Plan.from_json(plan.to_json()) == plan
    data = json.loads(plan.to_json())
    data["moves"][0]["to_server"] = "app-lon1-1"
    with pytest.raises(PlanError, match="edited after it was made"):
        Plan.from_json(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["moves"][0].update(to_server="../../etc"), r"moves\[0\]\.to_server"),
        (lambda d: d["moves"][0].update(size_bytes=-1), "non-negative integer"),
        (lambda d: d["moves"][0].update(snapshot_at="yesterday"), "ISO 8601"),
        (lambda d: d["moves"][0].update(extra=1), "unknown field"),
        (lambda d: d.update(mode="yolo"), "mode"),
        (lambda d: d.update(format="other"), "not a failover plan"),
        (lambda d: d["scope"].update(dc="jhb1"), "exactly one"),
        (
            lambda d: d["refusals"].append(
                {"client_id": d["moves"][0]["client_id"], "reason": "x"}
            ),
            "more than once",
        ),
        (lambda d: d.pop("moves"), "plan.moves: is missing"),
        (lambda d: d.update(plan_id="DROP TABLE"), "plan.plan_id"),
    ],
)
def test_malformed_or_hostile_plans_are_refused_with_the_field(
    edit: Callable[[dict[str, Any]], object], message: str
) -> None:
    fleet = lab_like()
    plan = plan_failover(state(fleet), Scope(server="app-jhb1-1"), Target())
    data = json.loads(plan.to_json())
    edit(data)
    with pytest.raises(PlanError, match=message):
        Plan.from_json(json.dumps(data))


def test_not_json_is_refused() -> None:
    with pytest.raises(PlanError, match="must be JSON"):
        Plan.from_json("{not json")
    with pytest.raises(PlanError, match="must be an object"):
        Plan.from_json("[]")


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("scope", "target", "extra", "error", "message"),
    [
        (Scope(clients=("../x",)), Target(), {}, UnsafeInputError, "client id"),
        (Scope(server="a;rm -rf /"), Target(), {}, UnsafeInputError, "scope server"),
        (Scope(dc="JHB1"), Target(), {}, UnsafeInputError, "data centre id"),
        (Scope(server="app-jhb1-1"), Target(server="x y"), {}, UnsafeInputError, "target"),
        (Scope(server="app-jhb1-1"), Target(country="za"), {}, PlanError, "alpha-2"),
        (Scope(server="app-jhb1-1"), Target(), {"down": frozenset({"$(id)"})}, UnsafeInputError,
         "down"),
        (Scope(clients=("nobody",)), Target(), {}, PlanError, "no client 'nobody'"),
        (Scope(server="ghost"), Target(), {}, PlanError, "not a server of fleet"),
        (Scope(server="mirror-jhb1-1"), Target(), {}, PlanError, "hosts no clients"),
        (Scope(dc="nowhere"), Target(), {}, PlanError, "no data centre 'nowhere'"),
        (Scope(), Target(), {}, PlanError, "exactly one"),
        (Scope(server="app-jhb1-1", dc="jhb1"), Target(), {}, PlanError, "exactly one"),
        (Scope(server="app-jhb1-1"), Target(dc="cpt1", country="ZA"), {}, PlanError, "at most one"),
        (Scope(server="app-jhb1-1"), Target(server="mirror-cpt1-1"), {}, PlanError, "cannot serve"),
        (Scope(server="app-jhb1-1"), Target(server="spare-cpt1-1"),
         {"down": frozenset({"spare-cpt1-1"})}, PlanError, "is down"),
        (Scope(dc="jhb1"), Target(server="spare-jhb1-1"), {}, PlanError, "inside the scope"),
        (Scope(dc="jhb1"), Target(dc="jhb1"), {}, PlanError, "being evacuated"),
        (Scope(server="app-jhb1-1"), Target(country="DE"), {}, PlanError, "no data centre in DE"),
        (Scope(server="app-jhb1-1"), Target(), {"provisionable": frozenset({"mars"})}, PlanError,
         "no data centre 'mars'"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_before_planning(
    scope: Scope,
    target: Target,
    extra: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message) as caught:
        plan_failover(state(lab_like(), **extra), scope, target)
    assert isinstance(caught.value, PermanentError)


def test_a_bad_mode_and_naive_times_are_refused() -> None:
    fleet = lab_like()
    with pytest.raises(PlanError, match="mode 'hot'"):
        plan_failover(state(fleet), Scope(server="app-jhb1-1"), Target(), "hot")  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="timezone-aware"):
        plan_failover(
            replace(state(fleet), now=NOW.replace(tzinfo=None)), Scope(dc="jhb1"), Target()
        )
    naive = replace(snap("acme-mining", "mirror-jhb1-1"), taken_at=NOW.replace(tzinfo=None))
    with pytest.raises(PlanError, match="taken_at"):
        plan_failover(state(fleet, [naive]), Scope(dc="jhb1"), Target())


def test_a_server_without_clients_gives_an_empty_plan() -> None:
    plan = plan_failover(state(lab_like()), Scope(server="spare-lon1-1"), Target())
    assert plan.moves == plan.refusals == plan.provisions == ()
    assert "nothing to move" in plan.render()


def test_render_shows_what_an_operator_approves() -> None:
    fleet = lab_like()
    plan = plan_failover(
        state(fleet, down=frozenset({"app-jhb1-1"})), Scope(server="app-jhb1-1"), Target()
    )
    text = plan.render()
    assert text.splitlines()[0] == f"failover plan {plan.plan_id} (emergency)"
    assert "scope:  server app-jhb1-1" in text and "target: automatic" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("acme-mining"))
    for cell in ("app-jhb1-1", "spare-cpt1-1", "mirror-jhb1-1", "(30m old)", "1.0 GB"):
        assert cell in row


def test_the_lab_fleet_after_an_app_server_power_loss() -> None:
    """The lab's own fleet.yaml (20 clients): the bench's scenario, planned."""
    servers = topology.SERVERS
    ports = {
        s.id: topology.ServerPorts(20000 + 4 * i, 20001 + 4 * i, 20002 + 4 * i, 20003 + 4 * i)
        for i, s in enumerate(servers)
    }
    document = topology.fleet_document(
        lab_dir=Path("/nonexistent/lab"),
        servers=servers,
        clients=topology.plan_clients(20),
        ports=ports,
        host_keys={s.id: HOST_KEY for s in servers},
        frontdoor_port=19999,
        size_mb=200,
        fast=True,
    )
    fleet = parse_fleet(yaml.safe_dump(document))
    lost = "app-jhb1-1"
    on_lost = {c.id for c in fleet.clients if c.server == lost}
    plan = plan_failover(
        state(
            fleet,
            down=frozenset({lost}),
            provisionable=frozenset(d.id for d in fleet.data_centres),
        ),
        Scope(server=lost),
        Target(),
    )
    assert plan.refusals == () and {m.client_id for m in plan.moves} == on_lost
    assert {fleet.server(m.to_server).dc for m in plan.moves} == {"cpt1"}
    # Least loaded first: app-cpt1-1 already hosts 5 of the 20, the empty spare takes the
    # 5 movers (reaching the same level, not passing it); nothing needs provisioning.
    assert {m.to_server for m in plan.moves} == {"spare-cpt1-1"} and len(plan.moves) == 5
    assert plan.provisions == ()
    assert all(m.source_mirror == "mirror-jhb1-1" for m in plan.moves)
    assert all(m.fallback_mirrors == ("mirror-cpt1-1",) for m in plan.moves)


# --------------------------------------------------------------------------- scratch servers

SCRATCH = "drill-20261206-175500-1"
WITH_SCRATCH = (
    *LAB_SERVERS,
    (SCRATCH, "cpt1", "app", ("mirror-cpt1-1", "mirror-jhb1-1"), 50, 1000),
)


def test_a_drills_scratch_server_is_never_a_target() -> None:
    """Seen in CI: a failover planned a client onto a drill's scratch server (empty, the
    least loaded), which the drill released before the failover acted."""
    fleet = lab_like(servers=WITH_SCRATCH)
    for scope in (Scope(server="app-jhb1-1"), Scope(dc="jhb1")):
        down = frozenset({"app-jhb1-1"} if scope.server else JHB1)
        plan = plan_failover(state(fleet, down=down), scope, Target())
        assert plan.moves and SCRATCH not in {m.to_server for m in plan.moves}
    only_cpt1 = plan_failover(
        state(fleet, down=JHB1), Scope(dc="jhb1"), Target(dc="cpt1")
    )  # the scratch server has the most room there, and is still not taken
    assert SCRATCH not in {m.to_server for m in only_cpt1.moves}
    with pytest.raises(PlanError, match="scratch server"):
        plan_failover(state(fleet), Scope(server="app-jhb1-1"), Target(server=SCRATCH))


def test_a_full_cpt1_refuses_rather_than_use_the_scratch_server() -> None:
    servers = [
        s if s[0] != "spare-cpt1-1" else (s[0], s[1], s[2], s[3], 0, 100) for s in WITH_SCRATCH
    ]
    servers = [s if s[0] != "app-cpt1-1" else (s[0], s[1], s[2], s[3], 1, 100) for s in servers]
    fleet = lab_like(servers=servers)
    plan = plan_failover(state(fleet, down=JHB1), Scope(dc="jhb1"), Target(dc="cpt1"))
    assert not plan.moves and plan.refusals
    assert f"{SCRATCH} is a drill's scratch server" in reason_of(plan, "acme-mining")
