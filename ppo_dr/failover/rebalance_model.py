"""The rebalance problem's vocabulary: servers, clients, moves and what stays over target.

Plain frozen dataclasses in integers (clients, bytes), so the solver
(:mod:`.rebalance_solve`) and the tests' brute force judge a plan by exact arithmetic.
The fleet adapter (:mod:`.rebalance`) builds a :class:`Problem` from the fleet and the
store's facts; nothing here knows about fleets, mirrors or Prefect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Final

from ppo_dr.failover.plan_json import human_size

#: The capacities a server may declare (fleet.yaml ``capacity``): client count, disk
#: bytes, requests per minute. A server without ``rpm`` is not limited on load.
DIMENSIONS: Final = ("clients", "disk_gb", "rpm")
DEFAULT_TARGET_UTIL: Final = 0.8


def target_fraction(target_util: object) -> Fraction:
    """*target_util* (0 < t <= 1) as an exact fraction, so limits are exact integers."""
    if isinstance(target_util, bool) or not isinstance(target_util, int | float):
        raise ValueError(f"target utilisation must be a number, got {target_util!r}")
    if not (math.isfinite(target_util) and 0 < target_util <= 1):
        raise ValueError(f"target utilisation must be above 0 and at most 1, got {target_util}")
    return Fraction(target_util).limit_denominator(10**6)


def amount(dimension: str, value: int) -> str:
    """*value* of *dimension* in an operator's units (clients, decimal bytes, rpm)."""
    if dimension == "clients":
        return f"{value} client(s)"
    return f"{value} rpm" if dimension == "rpm" else human_size(value)


@dataclass(frozen=True)
class Host:
    """A server the rebalance may move clients off or onto."""

    server_id: str
    dc: str
    country: str
    capacity: Mapping[str, int]  # per dimension of DIMENSIONS it is limited in
    closed: str | None = None  # why it takes no client (drained, down, maintenance)
    pinned: str | None = None  # why its clients cannot leave it now (down, maintenance)

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The dimensions this host is limited in (a missing one is unlimited)."""
        return tuple(d for d in DIMENSIONS if d in self.capacity)


@dataclass(frozen=True)
class Tenant:
    """A client where it lives now, what it weighs, and where it may not go."""

    client_id: str
    server_id: str
    size_bytes: int
    countries: tuple[str, ...]
    barred: Mapping[str, str] = field(default_factory=dict)  # server -> residency reason
    stuck: str | None = None  # why this client cannot move at all (e.g. no mirror to sync)
    rpm: int = 0  # requests per minute it brings (measured over a window)

    def weight(self, dimension: str) -> int:
        if dimension == "clients":
            return 1
        return self.rpm if dimension == "rpm" else self.size_bytes


@dataclass(frozen=True)
class Problem:
    """Bring every host under ``target`` of each capacity, moving the fewest bytes."""

    hosts: tuple[Host, ...]
    tenants: tuple[Tenant, ...]
    target: Fraction
    max_moves: int | None = None

    def host(self, server_id: str) -> Host:
        for host in self.hosts:
            if host.server_id == server_id:
                return host
        raise KeyError(server_id)

    def limit(self, host: Host, dimension: str) -> int:
        """The most a host may hold in *dimension* and be under target (exact)."""
        return math.floor(self.target * host.capacity[dimension])

    def load(self, placement: Mapping[str, str], server_id: str, dimension: str) -> int:
        """What *server_id* holds in *dimension* when clients are placed as *placement*."""
        return sum(t.weight(dimension) for t in self.tenants if placement[t.client_id] == server_id)

    def current(self) -> dict[str, str]:
        return {t.client_id: t.server_id for t in self.tenants}

    @cached_property
    def over_capacity(self) -> Mapping[str, str]:
        """server -> the first dimension it holds more than its capacity in now. Such a
        server takes no client, not even one that weighs nothing in that dimension (a
        client declared at 0 GB still grows on a disk that is already over-full)."""
        current = self.current()
        full: dict[str, str] = {}
        for h in self.hosts:
            over = [d for d in h.dimensions if self.load(current, h.server_id, d) > h.capacity[d]]
            if over:
                full[h.server_id] = over[0]
        return full

    def may_go(self, tenant: Tenant, host: Host) -> bool:
        """Whether *tenant* may be moved onto *host* (residency, open, under its
        capacity, not stuck)."""
        return (
            host.server_id != tenant.server_id
            and host.closed is None
            and host.server_id not in self.over_capacity
            and host.server_id not in tenant.barred
            and tenant.stuck is None
            and self.host(tenant.server_id).pinned is None
        )


@dataclass(frozen=True)
class Move:
    """One client to migrate (planned mode) from one server to another."""

    client_id: str
    from_server: str
    to_server: str
    size_bytes: int


@dataclass(frozen=True)
class Overload:
    """A server that stays over target in one dimension, and what blocks it."""

    server_id: str
    dimension: str
    load: int
    limit: int
    capacity: int
    reason: str

    def describe(self) -> str:
        used = f"{self.load / self.capacity:.0%}" if self.capacity else "over its 0 capacity"
        dim = self.dimension
        return (
            f"{self.server_id} stays over target in {dim}: {used} ({amount(dim, self.load)} "
            f"of {amount(dim, self.capacity)}; target at most {amount(dim, self.limit)}): "
            f"{self.reason}"
        )


@dataclass(frozen=True)
class Solution:
    """The moves that bring the fleet under target, and the servers they cannot."""

    moves: tuple[Move, ...]
    overloads: tuple[Overload, ...]
    exact: bool  # False when the search hit its time limit (the best found so far)

    def placement(self, problem: Problem) -> dict[str, str]:
        placed = problem.current()
        placed.update({m.client_id: m.to_server for m in self.moves})
        return placed
