"""The rebalance search: the fewest bytes moved that bring every server under target (pure).

An integer program solved by HiGHS (``scipy.optimize.milp``): a binary ``x[c, s]`` per
client and each server it may be on (its own, and every open server its residency
allows), exactly one per client. Per server and capacity dimension:

* **target**: what it holds after the plan is at most ``target × capacity``, plus a
  slack that only a server over target *now* may have (a server under target is
  never pushed over it);
* **capacity, in any order**: what it holds now plus everything the plan brings in is
  at most its capacity (clients leaving are not credited, so the migrations may run
  in any order, a few at a time, as the failover planner promises);
* at most ``max_moves`` moves.

Two solves: the first minimises the total slack (how far over target the fleet must
stay: zero when the target is reachable), the second keeps that slack and minimises
the bytes moved; each move's cost is its bytes × (1 + 1 % for leaving its data centre,
2 % for leaving its country) plus a tiny per-move cost, so ties keep clients in their
DC, then their country, then move fewer clients, and the bytes moved stay within 2 %
of the optimum. The solution is checked again in exact integers (the solver works in
floating point); a row it bent is tightened and solved again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from ppo_dr.failover.rebalance_explain import explain_overloads
from ppo_dr.failover.rebalance_model import DIMENSIONS, Move, Problem, Solution

#: How long each of the two solves may search; past it, the best plan found so far.
SOLVE_TIME_LIMIT_S: Final = 20.0
#: Cost of leaving the client's data centre / country, as a share of its bytes.
LEAVE_DC: Final = 0.01
LEAVE_COUNTRY: Final = 0.02
#: How many times a row the floating-point solver bent is tightened and solved again.
REPAIRS: Final = 3


@dataclass(frozen=True)
class _Var:
    tenant: int
    host: int
    moves: bool


@dataclass
class _Rows:
    """Sparse constraint rows under construction: ``lower <= A x <= upper``."""

    rows: list[int]
    cols: list[int]
    vals: list[float]
    lower: list[float]
    upper: list[float]

    def add(self, coefs: Sequence[tuple[int, float]], lower: float, upper: float) -> int:
        row = len(self.lower)
        for col, val in coefs:
            self.rows.append(row)
            self.cols.append(col)
            self.vals.append(val)
        self.lower.append(lower)
        self.upper.append(upper)
        return row

    def constraint(self, n_cols: int) -> LinearConstraint:
        matrix = coo_array(
            (np.array(self.vals), (np.array(self.rows), np.array(self.cols))),
            shape=(len(self.lower), n_cols),
        )
        return LinearConstraint(matrix.tocsr(), np.array(self.lower), np.array(self.upper))


def solve_rebalance(problem: Problem, time_limit_s: float = SOLVE_TIME_LIMIT_S) -> Solution:
    """The moves that bring every host under target moving the fewest bytes (see module)."""
    tightened: dict[tuple[str, int, str], int] = {}
    exact = True
    placement = problem.current()
    for _ in range(REPAIRS + 1):
        found, optimal = _solve(problem, tightened, time_limit_s)
        exact = exact and optimal
        if found is None:
            break
        bent = _bent_rows(problem, found)
        if not bent:
            placement = found
            break
        for key, excess in bent.items():
            tightened[key] = tightened.get(key, 0) + excess
    moves = tuple(
        Move(t.client_id, t.server_id, placement[t.client_id], t.size_bytes)
        for t in sorted(problem.tenants, key=lambda t: t.client_id)
        if placement[t.client_id] != t.server_id
    )
    return Solution(moves, explain_overloads(problem, placement, len(moves)), exact)


def _solve(
    problem: Problem, tightened: dict[tuple[str, int, str], int], time_limit_s: float
) -> tuple[dict[str, str] | None, bool]:
    hosts = problem.hosts
    index = {h.server_id: i for i, h in enumerate(hosts)}
    variables: list[_Var] = []
    for ti, tenant in enumerate(problem.tenants):
        variables.append(_Var(ti, index[tenant.server_id], False))
        variables += [
            _Var(ti, hi, True) for hi, h in enumerate(hosts) if problem.may_go(tenant, h)
        ]
    if not any(v.moves for v in variables):
        return problem.current(), True

    # Slack columns follow the x columns: one per (host, dimension) over target now.
    current = problem.current()
    slack_cols: list[tuple[int, str, float]] = []  # (host, dim, scale)
    rows = _Rows([], [], [], [], [])
    n_x = len(variables)
    for ti in range(len(problem.tenants)):
        rows.add([(j, 1.0) for j, v in enumerate(variables) if v.tenant == ti], 1.0, 1.0)
    for hi, host in enumerate(hosts):
        for dim in DIMENSIONS:
            cap = host.capacity[dim]
            limit = problem.limit(host, dim) - tightened.get((host.server_id, 0, dim), 0)
            now = problem.load(current, host.server_id, dim)
            onto = [
                (j, float(problem.tenants[v.tenant].weight(dim)))
                for j, v in enumerate(variables)
                if v.host == hi and problem.tenants[v.tenant].weight(dim)
            ]
            if not onto:
                continue
            scale = float(max(cap, now, 1))
            coefs = [(j, w / scale) for j, w in onto]
            if now > limit:
                slack_cols.append((hi, dim, scale))
                coefs.append((n_x + len(slack_cols) - 1, -1.0))
            rows.add(coefs, -np.inf, limit / scale)
            incoming = [(j, w / scale) for j, w in onto if variables[j].moves]
            if incoming:
                room = max(cap - now, 0) - tightened.get((host.server_id, 1, dim), 0)
                rows.add(incoming, -np.inf, max(room, 0) / scale)
    moving = [j for j, v in enumerate(variables) if v.moves]
    if problem.max_moves is not None:
        rows.add([(j, 1.0) for j in moving], -np.inf, float(problem.max_moves))

    n = n_x + len(slack_cols)
    integrality = np.concatenate([np.ones(n_x), np.zeros(len(slack_cols))])
    upper = np.ones(n)
    for k, (hi, dim, scale) in enumerate(slack_cols):
        host = hosts[hi]
        over = problem.load(current, host.server_id, dim) - problem.limit(host, dim)
        upper[n_x + k] = max(over, 0) / scale
    bounds = Bounds(np.zeros(n), upper)
    options = {"time_limit": time_limit_s, "presolve": True}
    optimal = True

    slack_total = 0.0
    if slack_cols:
        c1 = np.concatenate([np.zeros(n_x), np.ones(len(slack_cols))])
        first = milp(
            c1, integrality=integrality, bounds=bounds,
            constraints=rows.constraint(n), options=options,
        )  # fmt: skip
        if first.x is None:
            return None, False
        optimal = optimal and first.status == 0
        slack_total = float(first.fun)
        rows.add([(n_x + k, 1.0) for k in range(len(slack_cols))], -np.inf,
                 slack_total + 1e-9 + 1e-7 * slack_total)  # fmt: skip
    cost = np.zeros(n)
    unit = _cost_unit([t.size_bytes for t in problem.tenants])
    for j, v in enumerate(variables):
        if not v.moves:
            continue
        tenant = problem.tenants[v.tenant]
        here, there = hosts[v.host], problem.host(tenant.server_id)
        leave = (
            LEAVE_COUNTRY
            if here.country != there.country
            else LEAVE_DC
            if here.dc != there.dc
            else 0.0
        )
        cost[j] = tenant.size_bytes / unit * (1 + leave) + 1e-5 * (1 + 100 * leave)
    second = milp(
        cost, integrality=integrality, bounds=bounds,
        constraints=rows.constraint(n), options=options,
    )  # fmt: skip
    if second.x is None:
        return None, False
    optimal = optimal and second.status == 0
    placement: dict[str, str] = {}
    for ti, tenant in enumerate(problem.tenants):
        chosen = max(
            (j for j, v in enumerate(variables) if v.tenant == ti), key=lambda j: second.x[j]
        )
        placement[tenant.client_id] = hosts[variables[chosen].host].server_id
    return placement, optimal


def _cost_unit(sizes: Sequence[int]) -> float:
    """Bytes per cost unit: the smallest positive size costs about 1e-3 or more, and the
    largest at most 1e4 (HiGHS judges optimality to an absolute 1e-6, so tiny costs
    would be noise, and huge ones hurt its numerics)."""
    positive = [s for s in sizes if s > 0]
    if not positive:
        return 1.0
    return max(min(positive) / 1000, max(positive) / 1e4, 1.0)


def _bent_rows(problem: Problem, placement: dict[str, str]) -> dict[tuple[str, int, str], int]:
    """Rows the solver's answer breaks in exact integers, with by how much (0: target,
    1: capacity in any order). A target row of a host over target now is not a row."""
    current = problem.current()
    bent: dict[tuple[str, int, str], int] = {}
    for host in problem.hosts:
        for dim in DIMENSIONS:
            now = problem.load(current, host.server_id, dim)
            after = problem.load(placement, host.server_id, dim)
            limit = problem.limit(host, dim)
            if after > max(limit, now) or (now > limit and after > now):
                bent[(host.server_id, 0, dim)] = after - max(limit, now)
            incoming = sum(
                t.weight(dim)
                for t in problem.tenants
                if placement[t.client_id] == host.server_id and t.server_id != host.server_id
            )
            if incoming and now + incoming > host.capacity[dim]:
                bent[(host.server_id, 1, dim)] = now + incoming - host.capacity[dim]
    return bent
