"""The rebalance and drain planners: which clients to migrate where, as a failover plan (pure).

:func:`plan_rebalance` proposes the planned migrations that bring every app server
under a target share (default 80 %) of each capacity (``clients``, ``disk_gb``, and
``rpm`` where a server declares it: requests per minute, measured per client) while
moving the fewest bytes; ties keep clients in their data centre, then their country
(:mod:`.rebalance_solve`). :func:`plan_drain` moves every client off one server (a
hardware upgrade) and refuses, before anything moves, a drain that would strand a
client (say the last server a ZA-only client may live on).

The rules are the failover planner's: residency is absolute (the target server *and*
its mirror pair in a country the client allows), capacity is never exceeded in any
order of the moves; a drained server, a down one and one under maintenance take no
client, and the clients of a down server or one under maintenance stay (planned mode
needs the source up, and maintenance is someone else's work). Spares are the failover
pool: a rebalance never fills them; a drain fills one only when named (``--to``).

The result is a :class:`~.plan_json.Plan` in planned mode (same JSON, same approval,
same content-hashed id) plus what stays over target and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial

from ppo_dr.failover.capacity import client_sizes
from ppo_dr.failover.model import GB, FleetState, Scope, Target
from ppo_dr.failover.plan_checks import aware, known_server
from ppo_dr.failover.plan_json import Plan, human_size, with_id
from ppo_dr.failover.rebalance_model import (
    DEFAULT_TARGET_UTIL,
    DIMENSIONS,
    Host,
    Overload,
    Problem,
    Tenant,
    target_fraction,
)
from ppo_dr.failover.rebalance_solve import solve_rebalance
from ppo_dr.failover.scratch import is_scratch_server
from ppo_dr.failover.sources import planned_source, with_target
from ppo_dr.ids import check_id
from ppo_dr.inventory import Client, Fleet, Server
from ppo_dr.placement import PlanError, known_dc, mirrors_for

#: What a drain may fill its targets to: their whole capacity (the hard limit).
DRAIN_TARGET_UTIL = 1.0


@dataclass(frozen=True)
class Closures:
    """What the store says beyond the placements: servers the planner may not use now
    (drained, under maintenance) and each client's load in requests per minute (a
    client without a figure counts 0)."""

    drained: frozenset[str] = frozenset()
    maintenance: frozenset[str] = frozenset()
    rpm: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Rebalance:
    """A rebalance (or drain) plan, what it changes per server, and what stays over."""

    title: str  # "rebalance to 80 % of each capacity", "drain of app-jhb1-1"
    plan: Plan | None  # None: nothing to move
    overloads: tuple[Overload, ...]
    target: Fraction
    #: per server: id, dc, capacity, now, after (each per DIMENSIONS; capacity None: unlimited)
    usage: tuple[tuple[str, str, tuple[int | None, ...], tuple[int, ...], tuple[int, ...]], ...]
    exact: bool

    @property
    def moved_bytes(self) -> int:
        return sum(m.size_bytes for m in self.plan.moves) if self.plan else 0

    def render(self) -> str:
        """The per-server table, what stays over target, then the plan as approved."""
        head = (
            f"{self.title}: "
            f"{len(self.plan.moves) if self.plan else 0} client(s) move, "
            f"{human_size(self.moved_bytes)}"
            + ("" if self.exact else " (best found within the time limit, not proven least)")
        )
        lines = [
            head,
            "",
            "  server  dc  clients now -> after / cap  disk now -> after / cap"
            "  rpm now -> after / cap",
        ]
        for server, dc, cap, now, after in self.usage:
            rpm_cap = "unlimited" if cap[2] is None else cap[2]
            lines.append(
                f"  {server}  {dc}  {now[0]} -> {after[0]} / {cap[0]}"
                f"  {human_size(now[1])} -> {human_size(after[1])} / {human_size(cap[1] or 0)}"
                f"  {now[2]} -> {after[2]} / {rpm_cap}"
            )
        if self.overloads:
            lines += ["", "target not reachable:"]
            lines += [f"  {o.describe()}" for o in self.overloads]
        lines += ["", self.plan.render() if self.plan else "nothing to move"]
        return "\n".join(lines)


def plan_rebalance(
    state: FleetState,
    *,
    target_util: float = DEFAULT_TARGET_UTIL,
    max_moves: int | None = None,
    dc: str | None = None,
    closures: Closures = Closures(),
) -> Rebalance:
    """Planned migrations that bring every app server (of *dc*, if named) under target."""
    fleet = state.fleet
    target = _target(target_util)
    if max_moves is not None and (isinstance(max_moves, bool) or max_moves < 0):
        raise PlanError(f"max moves must be a non-negative integer, got {max_moves!r}")
    dc_id = None if dc is None else known_dc(fleet, check_id(dc, "data centre id")).id
    servers = _app_servers(fleet, dc_id)
    problem = _problem(state, servers, target, max_moves, closures)
    title = f"rebalance to {float(target):.0%} of each capacity"
    return _result(state, problem, Scope(), Target(dc=dc_id), title)


def _app_servers(fleet: Fleet, dc_id: str | None) -> list[Server]:
    """The app servers serving HTTP (of *dc_id*, if named) that may hold clients: a
    drill's scratch server is released with whatever is on it."""
    return [
        s
        for s in fleet.servers
        if s.role == "app" and s.http and dc_id in (None, s.dc) and not is_scratch_server(s.id)
    ]


def plan_drain(
    state: FleetState,
    server: str,
    *,
    to_dc: str | None = None,
    to_server: str | None = None,
    closures: Closures = Closures(),
) -> Rebalance:
    """Move every client off *server*; PlanError (nothing moves) if any client is stranded."""
    fleet = state.fleet
    sid = known_server(fleet, server, "server to drain")
    source = fleet.server(sid)
    if source.role == "mirror":
        raise PlanError(f"{sid} is a mirror server: it has no clients to drain")
    if to_dc is not None and to_server is not None:
        raise PlanError("drain to a data centre or to a server, not both")
    if to_server is not None:
        tid = known_server(fleet, to_server, "drain target")
        taker = fleet.server(tid)
        if tid == sid or taker.role == "mirror" or taker.http is None or is_scratch_server(tid):
            raise PlanError(f"drain target {tid} cannot take clients: name another server")
        targets = [taker]
    else:
        where = None if to_dc is None else known_dc(fleet, check_id(to_dc, "data centre id")).id
        targets = _app_servers(fleet, where)
    if sid in state.down:  # judged after the target, so an unknown target is named first
        raise PlanError(f"{sid} is down: a drain needs it up for the final sync; use failover")
    servers = [source, *(t for t in targets if t.id != sid)]
    # The drained server is open to nobody and, here only, its clients may leave it
    # (the drain itself opens its maintenance window).
    others = Closures(closures.drained | {sid}, closures.maintenance - {sid}, closures.rpm)
    problem = _problem(state, servers, _target(DRAIN_TARGET_UTIL), None, others)
    problem = Problem(
        tuple(
            Host(h.server_id, h.dc, h.country, dict.fromkeys(h.dimensions, 0), "being drained")
            if h.server_id == sid
            else h
            for h in problem.hosts
        ),
        problem.tenants,
        problem.target,
    )
    drain_target = Target(server=to_server) if to_server else Target(dc=to_dc)
    result = _result(state, problem, Scope(server=sid), drain_target, f"drain of {sid}")
    stranded = [o for o in result.overloads if o.server_id == sid]
    if stranded:
        raise PlanError(f"drain of {sid} refused, nothing moved: {stranded[0].reason}")
    return result


def _target(target_util: object) -> Fraction:
    try:
        return target_fraction(target_util)
    except ValueError as exc:
        raise PlanError(str(exc)) from None


def _problem(
    state: FleetState,
    servers: Sequence[Server],
    target: Fraction,
    max_moves: int | None,
    closures: Closures,
) -> Problem:
    fleet = state.fleet
    down = frozenset(known_server(fleet, s, "down server") for s in state.down)
    for sid in closures.drained | closures.maintenance:
        check_id(sid, "closed server")
    for cid, rpm in closures.rpm.items():
        if isinstance(rpm, bool) or not isinstance(rpm, int) or rpm < 0:
            raise PlanError(f"requests per minute of {cid} must be an integer >= 0, got {rpm!r}")
    placements = {c.id: c.server for c in fleet.clients}
    placements.update(state.placements)
    sizes = client_sizes(fleet, placements, state.snapshots)
    hosts = []
    ids = {s.id for s in servers}
    for s in sorted(servers, key=lambda s: s.id):
        if s.id in down:
            closed: str | None = "down"
        elif s.id in closures.maintenance:
            closed = "under maintenance"
        elif s.id in closures.drained:
            closed = "drained"
        else:
            closed = None
        hosts.append(
            Host(
                server_id=s.id,
                dc=s.dc,
                country=fleet.dc(s.dc).country,
                capacity=_declared(fleet, s.id),
                closed=closed,
                pinned=closed if closed in ("down", "under maintenance") else None,
            )
        )
    tenants = []
    for client in sorted(fleet.clients, key=lambda c: c.id):
        home = placements[client.id]
        if home not in ids:
            continue
        pair_of = partial(_pair, fleet, placements)
        move, stuck = planned_source(fleet, down, client.id, home, sizes[client.id], pair_of)
        barred = {h.server_id: why for h in hosts if (why := _barred(fleet, down, client, h))}
        tenants.append(
            Tenant(
                client.id,
                home,
                sizes[client.id],
                client.countries,
                barred,
                None if move is not None else stuck,
                closures.rpm.get(client.id, 0),
            )
        )
    return Problem(tuple(hosts), tuple(tenants), target, max_moves)


def _pair(fleet: Fleet, placements: Mapping[str, str], server_id: str) -> tuple[str, ...]:
    """The mirror pair *server_id* uses now (declared, or derived for its clients)."""
    placed = [c for c in fleet.clients if placements.get(c.id) == server_id]
    common = (
        sorted(set(placed[0].countries).intersection(*(p.countries for p in placed)))
        if placed
        else None
    )
    return mirrors_for(fleet, server_id, countries=common)


def _barred(fleet: Fleet, down: frozenset[str], client: Client, host: Host) -> str | None:
    """Why residency keeps *client* off *host* (its country, or its mirrors'), or None."""
    if host.country not in client.countries:
        return f"is in {host.country}, not allowed"
    pair = mirrors_for(fleet, host.server_id, down=down, countries=client.countries)
    foreign = [m for m in pair if fleet.country_of(m) not in client.countries]
    if foreign:
        where = ", ".join(f"{m} in {fleet.country_of(m)}" for m in foreign)
        return f"mirrors to {where}, not allowed"
    return None if pair else "has no mirror it could use"


def _declared(fleet: Fleet, server_id: str) -> dict[str, int]:
    """The capacity the fleet file declares for *server_id*, per dimension it limits
    (clients, bytes, and rpm if declared; a drain zeroes its own server's in the problem)."""
    capacity = fleet.server(server_id).capacity
    declared = {"clients": capacity.clients, "disk_gb": int(capacity.disk_gb * GB)}
    if capacity.rpm is not None:
        declared["rpm"] = capacity.rpm
    return declared


def _result(
    state: FleetState, problem: Problem, scope: Scope, target: Target, title: str
) -> Rebalance:
    fleet = state.fleet
    now = aware(state.now, "now")
    solution = solve_rebalance(problem)
    placements = {c.id: c.server for c in fleet.clients}
    placements.update(state.placements)
    down = frozenset(state.down)
    pair_of = partial(_pair, fleet, placements)
    moves = []
    for m in solution.moves:
        source, _ = planned_source(fleet, down, m.client_id, m.from_server, m.size_bytes, pair_of)
        assert source is not None  # the solver only moves clients with a source
        new_pair = mirrors_for(
            fleet, m.to_server, down=down, countries=fleet.client(m.client_id).countries
        )
        moves.append(with_target(source, m.to_server, new_pair))
    plan = None
    if moves:
        plan_scope = scope if scope != Scope() else Scope(clients=tuple(m.client_id for m in moves))
        plan = with_id(Plan("", "planned", plan_scope, target, now, tuple(moves), (), ()))
    after = solution.placement(problem)
    usage = tuple(
        (
            h.server_id,
            h.dc,
            tuple(_declared(fleet, h.server_id).get(d) for d in DIMENSIONS),
            tuple(problem.load(problem.current(), h.server_id, d) for d in DIMENSIONS),
            tuple(problem.load(after, h.server_id, d) for d in DIMENSIONS),
        )
        for h in problem.hosts
    )
    return Rebalance(title, plan, solution.overloads, problem.target, usage, solution.exact)
