"""The planner's promises for any fleet, catalogue, outage, scope and target (hypothesis).

Residency is never violated (target and new mirrors), capacity is never exceeded,
every client of the scope is either moved or refused (never both), restores come from
the freshest verified snapshot on a reachable mirror, and the same inputs give the
same plan, which survives a JSON round trip.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ppo_dr.failover.plan import (
    GB,
    FleetState,
    Mode,
    Plan,
    PlanError,
    Scope,
    SnapshotInfo,
    Target,
    plan_failover,
    template_capacity,
)
from ppo_dr.inventory import Fleet
from tests.ppo_dr.failover.fleets import NOW, fleet_data, fleet_from, snap

COUNTRIES = ("ZA", "GB", "DE")


@st.composite
def fleets(draw: st.DrawFn) -> Fleet:
    """1-4 DCs (lab or static); a mirror in dc0, maybe in the others; per DC 0-2 app
    servers and maybe a spare; 1-8 clients if there is an app server, mostly allowed
    where they live now (as the inventory rules demand) but not always."""
    n_dcs = draw(st.integers(1, 4))
    dcs = {
        f"dc{i}": (
            draw(st.sampled_from(COUNTRIES)),
            draw(st.sampled_from(["lab", "static"])),
        )
        for i in range(n_dcs)
    }
    mirrors = {dc: f"mirror-{dc}" for dc in dcs if dc == "dc0" or draw(st.integers(0, 3))}
    servers: list[Any] = [(m, dc, "mirror", (), 0, 1000) for dc, m in mirrors.items()]
    capacity = st.tuples(st.sampled_from([0, 1, 2, 4, 8]), st.sampled_from([0, 5, 50, 200]))
    apps: list[str] = []
    for dc in dcs:
        for n in range(draw(st.integers(0, 2))):
            sid = f"app-{dc}-{n}"
            onsite = [mirrors[dc]] if dc in mirrors else []
            others = sorted(m for d, m in mirrors.items() if d != dc)
            offsite: list[str] = []
            if others and draw(st.integers(0, 3)) > 0:
                offsite.append(draw(st.sampled_from(others)))
            servers.append((sid, dc, "app", tuple(onsite + offsite), *draw(capacity)))
            apps.append(sid)
        if draw(st.integers(0, 2)):
            servers.append((f"spare-{dc}", dc, "spare", (), *draw(capacity)))
    clients = []
    for i in range(draw(st.integers(1, 8)) if apps else 0):
        home = draw(st.sampled_from(apps))
        countries = draw(st.lists(st.sampled_from(COUNTRIES), max_size=3, unique=True))
        if draw(st.integers(0, 4)) or not countries:
            countries = list(dict.fromkeys([dcs[home.split("-")[1]][0], *countries]))
        size = draw(st.sampled_from([0, 1, 2.5, 8, 30]))
        clients.append((f"client-{i}", home, countries, size))
    return fleet_from(fleet_data(dcs, servers, clients))


@st.composite
def situations(draw: st.DrawFn) -> tuple[FleetState, Scope, Target, Mode]:
    fleet = draw(fleets())
    server_ids = [s.id for s in fleet.servers]
    mirror_ids = [s.id for s in fleet.servers_by_role("mirror")]
    snapshots: list[SnapshotInfo] = []
    for client in fleet.clients:
        for mirror in (
            draw(st.lists(st.sampled_from(mirror_ids), unique=True)) if mirror_ids else []
        ):
            for _ in range(draw(st.integers(1, 2))):
                snapshots.append(
                    snap(
                        client.id,
                        mirror,
                        draw(st.sampled_from([5, 30, 30, 90])),
                        verified=draw(st.sampled_from([True, True, True, False])),
                        size=draw(st.sampled_from([0, GB // 2, 3 * GB, 20 * GB])),
                        snapshot_id=f"snap-{len(snapshots)}",
                    )
                )
    down = frozenset(draw(st.lists(st.sampled_from(server_ids), unique=True, max_size=3)))
    dc_ids = [d.id for d in fleet.data_centres]
    provisionable = frozenset(draw(st.lists(st.sampled_from(dc_ids), unique=True)))
    scope_kind = draw(st.sampled_from(["clients", "server", "dc"]))
    if scope_kind == "clients" and fleet.clients:
        ids = [c.id for c in fleet.clients]
        scope = Scope(clients=tuple(draw(st.lists(st.sampled_from(ids), min_size=1, unique=True))))
    elif scope_kind == "server" or scope_kind == "clients":
        hosts = sorted({c.server for c in fleet.clients})
        if not hosts or not draw(st.integers(0, 5)):
            hosts = [s.id for s in fleet.servers if s.role != "mirror"] or server_ids
        scope = Scope(server=draw(st.sampled_from(hosts)))
    else:
        scope = Scope(dc=draw(st.sampled_from(dc_ids)))
    target = draw(
        st.one_of(
            st.just(Target()),
            st.just(Target()),
            st.just(Target()),
            st.sampled_from(server_ids).map(lambda s: Target(server=s)),
            st.sampled_from(dc_ids).map(lambda d: Target(dc=d)),
            st.sampled_from(COUNTRIES).map(lambda c: Target(country=c)),
        )
    )
    mode: Mode = draw(st.sampled_from(["emergency", "emergency", "planned"]))
    state = FleetState(fleet, {}, snapshots, NOW, down, provisionable)
    return state, scope, target, mode


def in_scope(state: FleetState, scope: Scope) -> set[str]:
    fleet = state.fleet
    if scope.clients:
        return set(scope.clients)
    if scope.server:
        return {c.id for c in fleet.clients if c.server == scope.server}
    return {c.id for c in fleet.clients if fleet.server(c.server).dc == scope.dc}


def sizes(state: FleetState) -> dict[str, int]:
    """Newest catalogued size per client, else fleet.yaml's size_gb (computed independently)."""
    newest: dict[str, SnapshotInfo] = {}
    for s in state.snapshots:
        if s.client_id not in newest or (s.taken_at, s.snapshot_id) >= (
            newest[s.client_id].taken_at,
            newest[s.client_id].snapshot_id,
        ):
            newest[s.client_id] = s
    return {
        c.id: newest[c.id].size_bytes if c.id in newest else int(c.size_gb * GB)
        for c in state.fleet.clients
    }


def check(state: FleetState, scope: Scope, target: Target, plan: Plan) -> None:
    fleet = state.fleet
    moved = [m.client_id for m in plan.moves]
    refused = [r.client_id for r in plan.refusals]
    # Every client of the scope exactly once: moved or refused, never both.
    assert Counter(moved + refused) == Counter(in_scope(state, scope))
    new_dc = {p.server_id: p.dc for p in plan.provisions}
    assert not set(new_dc) & {s.id for s in fleet.servers}
    country_of = {**{s.id: fleet.country_of(s.id) for s in fleet.servers}}
    country_of.update({sid: fleet.dc(dc).country for sid, dc in new_dc.items()})
    size = sizes(state)
    load_clients = Counter(c.server for c in fleet.clients)
    load_bytes: Counter[str] = Counter()
    for c in fleet.clients:
        load_bytes[c.server] += size[c.id]
    for move in plan.moves:
        client = fleet.client(move.client_id)
        # Residency: the target and every mirror of its new pair.
        assert country_of[move.to_server] in client.countries
        assert move.new_mirrors, "a move without any mirror"
        assert all(fleet.country_of(m) in client.countries for m in move.new_mirrors)
        assert move.to_server != move.from_server and move.to_server not in state.down
        if move.to_server in new_dc:
            assert next(p for p in plan.provisions if p.server_id == move.to_server).mirrors == (
                move.new_mirrors
            )
        else:
            server = fleet.server(move.to_server)
            assert server.role != "mirror" and server.http is not None
            assert server.mirrors in ((), move.new_mirrors)
        # An explicit target is honoured.
        if target.server:
            assert move.to_server == target.server
        if target.dc:
            assert (new_dc.get(move.to_server) or fleet.server(move.to_server).dc) == target.dc
        if target.country:
            assert country_of[move.to_server] == target.country
        if scope.dc:
            assert (new_dc.get(move.to_server) or fleet.server(move.to_server).dc) != scope.dc
        load_clients[move.to_server] += 1
        load_bytes[move.to_server] += move.size_bytes
        if plan.mode == "planned":
            assert move.snapshot_id is None and move.from_server not in state.down
            assert move.source_mirror not in state.down
        else:
            # The freshest verified snapshot on a reachable mirror.
            usable = [
                s
                for s in state.snapshots
                if s.client_id == client.id and s.verified and s.mirror_id not in state.down
            ]
            best = max(s.taken_at for s in usable)
            chosen = next(
                s
                for s in usable
                if (s.mirror_id, s.snapshot_id) == (move.source_mirror, move.snapshot_id)
            )
            assert chosen.taken_at == best == move.snapshot_at
            assert move.size_bytes == chosen.size_bytes
            assert move.source_mirror not in move.fallback_mirrors
            assert not set(move.fallback_mirrors) & state.down
    # Capacity: what is placed now plus what the plan adds (the movers are not credited).
    template = template_capacity(fleet)
    for server_id in {m.to_server for m in plan.moves}:
        cap = template if server_id in new_dc else fleet.server(server_id).capacity
        assert load_clients[server_id] <= cap.clients
        assert load_bytes[server_id] <= int(cap.disk_gb * GB)
    for refusal in plan.refusals:
        assert refusal.reason


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(situations())
def test_residency_capacity_and_coverage_hold_for_any_situation(
    situation: tuple[FleetState, Scope, Target, Mode],
) -> None:
    state, scope, target, mode = situation
    try:
        plan = plan_failover(state, scope, target, mode)
    except PlanError as exc:
        event("PlanError")
        # Only explicit targets (or a scope naming a mirror) can make a request unplannable.
        assert target != Target() or "mirror server" in str(exc), exc
        return
    event(f"moves: {min(len(plan.moves), 3)}+, refusals: {min(len(plan.refusals), 3)}+")
    event(f"provisions: {min(len(plan.provisions), 2)}+")
    check(state, scope, target, plan)
    # Deterministic: the same inputs, later, give the same plan id and moves.
    later = FleetState(
        state.fleet,
        state.placements,
        list(reversed(state.snapshots)),
        NOW + timedelta(hours=1),
        state.down,
        state.provisionable,
    )
    again = plan_failover(later, scope, target, mode)
    assert (again.plan_id, again.moves, again.provisions, again.refusals) == (
        plan.plan_id,
        plan.moves,
        plan.provisions,
        plan.refusals,
    )
    assert Plan.from_json(plan.to_json()) == plan
    assert plan.render()
