"""Why a server stays over target after the rebalance search (pure).

For each server and capacity dimension still over target, the reason an operator can
act on: the server's clients cannot leave it (down, under maintenance), the plan's
move limit is reached, or, for its heaviest clients, why each other server is no
place for them: residency (the country, or a mirror's country), closed (drained, down,
under maintenance), or no room under the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ppo_dr.failover.rebalance_model import Host, Overload, Problem, Tenant, amount

#: How many of an over-target server's clients the reason names (heaviest first).
NAMED_CLIENTS: Final = 3


def explain_overloads(
    problem: Problem, placement: Mapping[str, str], n_moves: int
) -> tuple[Overload, ...]:
    """Every (server, dimension) over target when clients sit as *placement*, with why."""
    overloads: list[Overload] = []
    for host in sorted(problem.hosts, key=lambda h: h.server_id):
        for dim in host.dimensions:
            load = problem.load(placement, host.server_id, dim)
            limit = problem.limit(host, dim)
            if load <= limit:
                continue
            reason = _why(problem, placement, host, dim, n_moves)
            overloads.append(Overload(host.server_id, dim, load, limit, host.capacity[dim], reason))
    return tuple(overloads)


def _why(problem: Problem, placement: Mapping[str, str], host: Host, dim: str, n_moves: int) -> str:
    if host.pinned is not None:
        return f"its clients cannot leave it now: it is {host.pinned}"
    if problem.max_moves is not None and n_moves >= problem.max_moves:
        return f"the plan's limit of {problem.max_moves} move(s) is reached"
    tenants = sorted(
        (t for t in problem.tenants if placement[t.client_id] == host.server_id),
        key=lambda t: (-t.weight(dim), t.client_id),
    )
    movable = [t for t in tenants if t.weight(dim)]
    if not movable:
        return "none of its clients weighs anything in this dimension"
    named = [_tenant_blocked(problem, placement, t) for t in movable[:NAMED_CLIENTS]]
    more = len(movable) - NAMED_CLIENTS
    return "; ".join(named) + (f"; and {more} more client(s)" if more > 0 else "")


def _tenant_blocked(problem: Problem, placement: Mapping[str, str], tenant: Tenant) -> str:
    """Why *tenant* can go to no other server (one clause per server)."""
    head = f"{tenant.client_id} (allowed: {', '.join(tenant.countries)})"
    if tenant.stuck is not None:
        return f"{head} cannot move: {tenant.stuck}"
    clauses: list[str] = []
    for other in sorted(problem.hosts, key=lambda h: h.server_id):
        if other.server_id == placement[tenant.client_id]:
            continue
        if other.server_id in tenant.barred:
            clauses.append(f"{other.server_id} {tenant.barred[other.server_id]}")
        elif other.closed is not None:
            clauses.append(f"{other.server_id} is {other.closed}")
        elif other.server_id in problem.over_capacity:
            dim = problem.over_capacity[other.server_id]
            clauses.append(f"{other.server_id} is over its {dim} capacity already")
        else:
            clauses.append(f"{other.server_id} {_no_room(problem, placement, other, tenant)}")
    if not clauses:
        return f"{head}: the fleet has no other server"
    return f"{head}: " + ", ".join(clauses)


def _no_room(problem: Problem, placement: Mapping[str, str], host: Host, tenant: Tenant) -> str:
    current = problem.current()
    for dim in host.dimensions:
        after = problem.load(placement, host.server_id, dim) + tenant.weight(dim)
        limit = problem.limit(host, dim)
        if after > limit:
            return f"has no room under target ({dim}: {amount(dim, limit)} at most)"
        incoming = tenant.weight(dim) + sum(
            t.weight(dim)
            for t in problem.tenants
            if placement[t.client_id] == host.server_id and t.server_id != host.server_id
        )
        if problem.load(current, host.server_id, dim) + incoming > host.capacity[dim]:
            return f"would exceed its {dim} capacity while the moves run"
    return "has room, but no plan found uses it within the limits"
