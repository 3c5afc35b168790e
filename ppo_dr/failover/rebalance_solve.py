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

import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp
from scipy.sparse import coo_array

from ppo_dr.failover.rebalance_explain import explain_overloads
from ppo_dr.failover.rebalance_model import Move, Problem, Solution

#: How long each of the two solves may search; past it, the best plan found so far.
SOLVE_TIME_LIMIT_S: Final = 20.0
#: Cost of leaving the client's data centre / country, as a share of its bytes.
LEAVE_DC: Final = 0.01
LEAVE_COUNTRY: Final = 0.02
#: How close to the least cost a plan must be proven (0.1 %: the 2 % of the tie-breaks
#: dominate; a tighter proof costs minutes on large fleets).
MIP_REL_GAP: Final = 1e-3
#: scipy's status for a HiGHS solve error (neither a solution nor proof of none).
SOLVE_ERROR: Final = 4
#: Past this many possible moves, only clients of servers over target may move.
WHOLE_SEARCH_MOVES: Final = 5000
#: How many times a row the floating-point solver bent is tightened and solved again.
REPAIRS: Final = 3
#: What HiGHS's stray debug line starts with (printed on fd 1 whatever its options say).
HIGHS_DEBUG_LINE: Final = b"HighsMipSolverData::"
#: One solve at a time holds fd 1 (two holding it at once would lose the real one).
_FD1_HELD = threading.Lock()


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
    movers = _movers(problem)
    variables: list[_Var] = []
    for ti, tenant in enumerate(problem.tenants):
        variables.append(_Var(ti, index[tenant.server_id], False))
        if tenant.client_id in movers:
            variables += [
                _Var(ti, hi, True) for hi, h in enumerate(hosts) if problem.may_go(tenant, h)
            ]
    if not any(v.moves for v in variables):
        return problem.current(), True
    whole = len(movers) == len(problem.tenants)

    # After the x columns, per (host, dimension) over target now: a binary "stays over"
    # y and the bytes (or clients) s it stays over by, s <= over * y.
    current = problem.current()
    over_cols: list[tuple[int, str, int]] = []  # (host, dim, how far over target now)
    rows = _Rows([], [], [], [], [])
    n_x = len(variables)
    columns_of: list[list[int]] = [[] for _ in problem.tenants]  # each tenant's x columns
    for j, v in enumerate(variables):
        columns_of[v.tenant].append(j)
    for columns in columns_of:
        rows.add([(j, 1.0) for j in columns], 1.0, 1.0)
    target_rows: list[tuple[int, list[tuple[int, float]], float]] = []
    for hi, host in enumerate(hosts):
        for dim in host.dimensions:
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
            # Rows stay in bytes: HiGHS checks a MIP's feasibility on the unscaled rows
            # (to 1e-6), so a byte over is over; scaled rows would hide it.
            if now > limit:
                over_cols.append((hi, dim, now - problem.limit(host, dim)))
                target_rows.append((len(over_cols) - 1, onto, float(limit)))
            else:
                rows.add(onto, -np.inf, float(limit))
            incoming = [(j, w) for j, w in onto if variables[j].moves]
            if incoming:
                room = max(cap - now, 0) - tightened.get((host.server_id, 1, dim), 0)
                rows.add(incoming, -np.inf, float(max(room, 0)))
    if problem.max_moves is not None:
        moving = [j for j, v in enumerate(variables) if v.moves]
        rows.add([(j, 1.0) for j in moving], -np.inf, float(problem.max_moves))
    k_over = len(over_cols)
    y0, s0 = n_x, n_x + k_over  # first y column, first s column
    for k, onto, bound in target_rows:
        rows.add([*onto, (s0 + k, -1.0)], -np.inf, bound)
        rows.add([(s0 + k, 1.0), (y0 + k, -float(over_cols[k][2]))], -np.inf, 0.0)

    n = n_x + 2 * k_over
    integrality = np.concatenate([np.ones(n_x + k_over), np.zeros(k_over)])
    lower, upper = np.zeros(n), np.ones(n)
    upper[s0:] = [float(over) for _, _, over in over_cols]
    options = {"time_limit": time_limit_s, "presolve": True, "mip_rel_gap": MIP_REL_GAP}
    optimal = whole
    if over_cols:
        # First the fewest (server, dimension) pairs left over target, then the least
        # left over (each as a share of the server's capacity, so worth less than a pair).
        c1 = np.zeros(n)
        shares = [over / max(hosts[hi].capacity[dim], 1) for hi, dim, over in over_cols]
        c1[y0:s0] = 1.0 + sum(shares)
        c1[s0:] = [1 / max(hosts[hi].capacity[dim], 1) for hi, dim, _ in over_cols]
        first = _milp(c1, integrality, Bounds(lower, upper), rows.constraint(n), options)
        if first.x is None:
            return None, False
        optimal = whole and first.status == 0
        stays = np.round(first.x[y0:s0])
        upper[y0:s0] = lower[y0:s0] = stays
        upper[s0:] = np.where(stays > 0, np.ceil(first.x[s0:]) + 0.5, 0.0)
    bounds = Bounds(lower, upper)
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
    second = _milp(cost, integrality, bounds, rows.constraint(n), options)
    if second.x is not None:
        x, optimal = second.x, optimal and second.status == 0
    elif over_cols:  # the first solve's placement is safe too, if not the fewest bytes
        x, optimal = first.x, False
    else:
        return None, False
    placement: dict[str, str] = {}
    for tenant, columns in zip(problem.tenants, columns_of, strict=True):
        chosen = max(columns, key=lambda j: x[j])
        placement[tenant.client_id] = hosts[variables[chosen].host].server_id
    return placement, optimal


def _milp(
    cost: np.ndarray[Any, Any],
    integrality: np.ndarray[Any, Any],
    bounds: Bounds,
    constraints: LinearConstraint,
    options: dict[str, Any],
) -> OptimizeResult:
    """``milp``, solved again without presolve when HiGHS answers "Solve error" (seen
    after its transformNewIntegerFeasibleSolution fault on a feasible model)."""
    with highs_debug_dropped():
        result = milp(cost, integrality=integrality, bounds=bounds, constraints=constraints,
                      options=options)  # fmt: skip
        if result.x is None and result.status == SOLVE_ERROR:
            result = milp(cost, integrality=integrality, bounds=bounds, constraints=constraints,
                          options={**options, "presolve": False})  # fmt: skip
    return result


@contextmanager
def highs_debug_dropped() -> Iterator[None]:
    """Hold fd 1 in a temporary file while HiGHS solves, then pass on everything written
    to it meanwhile except HiGHS's stray debug line (an upstream bug that no option
    silences), so neither a printed plan nor a flow's log carries it and nobody else's
    output is lost, only delayed by the solve."""
    with _FD1_HELD, tempfile.TemporaryFile() as held:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(held.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            held.seek(0)
            rest = memoryview(b"".join(line for line in held if HIGHS_DEBUG_LINE not in line))
            while rest:
                rest = rest[os.write(1, rest) :]


def _movers(problem: Problem) -> set[str]:
    """The clients the search may move: all of them, unless that makes more than
    :data:`WHOLE_SEARCH_MOVES` possible moves; then only those on servers over target
    now (chains through servers under target are given up, and the plan is not called
    the least)."""
    every = {t.client_id for t in problem.tenants}
    possible = sum(1 for t in problem.tenants for h in problem.hosts if problem.may_go(t, h))
    if possible <= WHOLE_SEARCH_MOVES:
        return every
    current = problem.current()
    over = {
        h.server_id
        for h in problem.hosts
        for d in h.dimensions
        if problem.load(current, h.server_id, d) > problem.limit(h, d)
    }
    return {t.client_id for t in problem.tenants if t.server_id in over}


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
        for dim in host.dimensions:
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
