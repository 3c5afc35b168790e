"""The failover planner: which clients move where, restored from which mirror (pure).

Given the fleet, where every client lives now, the snapshot catalogue and what is down,
:func:`plan_failover` decides for each client in a scope (some clients, a server, a data
centre):

* **where to restore from** (emergency mode): the freshest *verified* snapshot on a
  mirror that is not down; when two mirrors hold equally fresh snapshots the on-site one
  (same data centre as the client's current server) wins, then one in the same country.
  The other reachable mirrors holding the client follow as ordered fallbacks. In planned
  mode the source server is up and a final sync makes the snapshot, so the source is
  its current mirror pair and the snapshot fields stay None.
* **where to go**: an app server with room or a spare that serves HTTP, never the
  client's current server, a down one, nor a drill's scratch server (released minutes
  later, :mod:`.scratch`). Residency is absolute: the target *and* its
  mirror pair must be in countries the client allows. Capacity (clients and disk) is
  never exceeded, counting what is placed now plus what this plan adds. Automatic
  targeting prefers the client's current country, then its current data centre when
  its server is up (local, like its on-site mirror) but a data centre other than that
  of a down source server, then existing servers over new ones, complete mirror pairs
  over degraded ones, and the least loaded server; ties break by server id.
* **what to provision**: when no existing candidate of a data centre has room and the
  data centre's provider can provision (``FleetState.provisionable``), new app servers
  with deterministic ids, as many as the load needs. Their capacity is
  :func:`template_capacity`.

A client that cannot go anywhere is refused with the reason (its allowed countries and
why each candidate was rejected): that text is what gets escalated. A plan is content
addressed: ``plan_id`` hashes everything but ``created_at``, so the same inputs give
the same plan id, and :meth:`Plan.from_json` refuses a plan edited after it was made.

No I/O here: the CLI and the failover flow read the store and the fleet and pass them in.
The input checks are in :mod:`.plan_checks`, the restore sources in :mod:`.sources`,
sizes and load in :mod:`.capacity`, mirror pairs in :mod:`ppo_dr.placement`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ppo_dr.failover.capacity import Slot, client_sizes, server_load
from ppo_dr.failover.model import (
    GB,
    MODES,
    PROVISION_TEMPLATE,
    ClientMove,
    FleetState,
    Mode,
    ProvisionRequest,
    Refusal,
    Scope,
    SnapshotInfo,
    Target,
)
from ppo_dr.failover.plan_checks import (
    aware,
    checked_scope,
    checked_snapshot,
    checked_target,
    clients_in,
    known_server,
    target_country,
)
from ppo_dr.failover.plan_json import Plan, digest, scope_data, target_data, with_id
from ppo_dr.failover.scratch import is_scratch_server
from ppo_dr.failover.sources import emergency_source, planned_source, with_target
from ppo_dr.ids import check_id
from ppo_dr.inventory import Client, DataCentre, Fleet
from ppo_dr.placement import PlanError, known_dc, mirrors_for, server_or_none, template_capacity

__all__ = [
    "GB",
    "MODES",
    "ClientMove",
    "FleetState",
    "Mode",
    "Plan",
    "PlanError",
    "ProvisionRequest",
    "Refusal",
    "Scope",
    "SnapshotInfo",
    "Target",
    "mirrors_for",
    "plan_failover",
    "template_capacity",
]


@dataclass
class _Planner:
    """Where each client goes: the candidate servers, their room and their mirror pairs."""

    state: FleetState
    scope: Scope
    target: Target
    placements: dict[str, str]
    sizes: dict[str, int]
    seed: str
    slots: dict[str, Slot] = field(default_factory=dict)
    snapshots_of: dict[str, list[SnapshotInfo]] = field(default_factory=dict)
    opened: dict[str, int] = field(default_factory=dict)  # provisioned per DC so far

    @property
    def fleet(self) -> Fleet:
        return self.state.fleet

    def current_pair(self, server_id: str) -> tuple[str, ...]:
        """The mirror pair a server uses now, on-site first (declared, or derived)."""
        return mirrors_for(self.fleet, server_id, countries=self.common_countries(server_id))

    def common_countries(self, server_id: str) -> list[str] | None:
        """Countries every client placed on *server_id* allows (None: no clients)."""
        placed = [c for c in self.fleet.clients if self.placements.get(c.id) == server_id]
        if not placed:
            return None
        return sorted(set(placed[0].countries).intersection(*(p.countries for p in placed)))

    # -- where to go

    def build_slots(self, load: Mapping[str, tuple[int, int]]) -> None:
        for server in self.fleet.servers:
            if server.role == "mirror" or server.http is None or is_scratch_server(server.id):
                continue
            clients, used = load.get(server.id, (0, 0))
            pair = None
            if server.mirrors or self.common_countries(server.id) is not None:
                pair = self.current_pair(server.id)
            self.slots[server.id] = Slot(
                server_id=server.id,
                dc=server.dc,
                country=self.fleet.dc(server.dc).country,
                max_clients=server.capacity.clients,
                max_bytes=int(server.capacity.disk_gb * GB),
                clients=clients,
                bytes=used,
                new=False,
                pair=pair,
            )

    def in_target(self, dc: DataCentre, server_id: str | None) -> bool:
        """Whether the explicit target (if any) and the scope allow this place."""
        if self.scope.dc is not None and dc.id == self.scope.dc:
            return False
        if self.target.server is not None:
            return server_id == self.target.server
        if self.target.dc is not None:
            return dc.id == self.target.dc
        if self.target.country is not None:
            return dc.country == self.target.country
        return True

    def choose(self, client: Client, source: str, size: int) -> tuple[Slot | None, str]:
        """The best slot for *client*, or None and every candidate's reason for rejection."""
        down = self.state.down
        src = server_or_none(self.fleet, source)
        home_country = self.fleet.dc(src.dc).country if src else client.countries[0]
        avoid_dc = src.dc if src is not None and source in down else None
        rejected: list[str] = []
        ranked: list[tuple[tuple[Any, ...], Slot]] = []

        def consider(slot: Slot, order: int) -> None:
            why = self.rejection(client, source, slot, size)
            if why:
                label = f"a new server in {slot.dc}" if order == 2 else slot.server_id
                rejected.append(f"{label} {why}")
                return
            pair = self.pair_for(client, slot)
            missing = 2 - len([m for m in pair if m not in down])
            country_rank = (
                0 if slot.country == home_country else 1 + client.countries.index(slot.country)
            )
            key = (
                country_rank,
                2 if slot.dc == avoid_dc else 0 if src is not None and slot.dc == src.dc else 1,
                order,
                max(missing, 0),
                slot.utilisation(size),
                slot.server_id,
            )
            ranked.append((key, slot))

        for server in self.fleet.servers:
            if server.role == "mirror" or not self.in_target(self.fleet.dc(server.dc), server.id):
                continue
            if server.id in down:
                rejected.append(f"{server.id} is down")
            elif server.http is None:
                rejected.append(f"{server.id} serves no HTTP")
            elif is_scratch_server(server.id):
                rejected.append(f"{server.id} is a drill's scratch server")
            else:
                consider(self.slots[server.id], 0)
        if self.target.server is None:
            for dc in self.fleet.data_centres:
                if not self.in_target(dc, None):
                    continue
                opened = [s for s in self.slots.values() if s.new and s.dc == dc.id]
                for slot in opened:
                    consider(slot, 1)
                if dc.id in self.state.provisionable and not self.dc_lost(dc.id):
                    consider(self.fresh_slot(dc), 2)
                elif dc.country in client.countries and not opened:
                    why = "has lost every server" if self.dc_lost(dc.id) else "cannot provision"
                    rejected.append(f"data centre {dc.id} ({dc.provider}) {why}")
        if ranked:
            return min(ranked, key=lambda item: item[0])[1], ""
        allowed = ", ".join(client.countries)
        where = "" if self.target == Target() else f" in target {self.target.describe()}"
        listed = "; ".join(rejected) if rejected else "the fleet has no app or spare server"
        return None, f"no allowed target{where} (allowed countries: {allowed}): {listed}"

    def rejection(self, client: Client, source: str, slot: Slot, size: int) -> str | None:
        if slot.server_id == source:
            return "is its current server"
        if slot.country not in client.countries:
            return f"is in {slot.country}, not allowed"
        pair = self.pair_for(client, slot)
        foreign = [m for m in pair if self.fleet.country_of(m) not in client.countries]
        if foreign:
            where = ", ".join(f"{m} in {self.fleet.country_of(m)}" for m in foreign)
            return f"mirrors to {where}, not allowed"
        if not pair:
            return "has no mirror it could use"
        return slot.problem(size)

    def pair_for(self, client: Client, slot: Slot) -> tuple[str, ...]:
        if slot.pair is not None:
            return slot.pair
        return mirrors_for(
            self.fleet,
            slot.server_id,
            dc=slot.dc,
            down=self.state.down,
            countries=client.countries,
        )

    def dc_lost(self, dc_id: str) -> bool:
        """A DC whose every server is down is lost: nothing is provisioned there."""
        servers = self.fleet.servers_in(dc_id)
        return bool(servers) and all(s.id in self.state.down for s in servers)

    def fresh_slot(self, dc: DataCentre) -> Slot:
        """A server this plan would provision in *dc* (not yet part of the plan)."""
        n = self.opened.get(dc.id, 0) + 1
        while True:
            server_id = f"app-{dc.id[:48].rstrip('-')}-{self.seed[:6]}-{n}"
            if server_id not in self.slots and server_or_none(self.fleet, server_id) is None:
                break
            n += 1
        capacity = template_capacity(self.fleet)
        return Slot(
            server_id=server_id,
            dc=dc.id,
            country=dc.country,
            max_clients=capacity.clients,
            max_bytes=int(capacity.disk_gb * GB),
            clients=0,
            bytes=0,
            new=True,
            pair=None,
        )

    def place(self, client: Client, slot: Slot, size: int) -> tuple[str, ...]:
        """Book *client* on *slot* (opening it if it is new); return its mirror pair."""
        pair = self.pair_for(client, slot)
        if slot.pair is None:
            slot.pair = pair
        if slot.new and slot.server_id not in self.slots:
            self.slots[slot.server_id] = slot
            self.opened[slot.dc] = self.opened.get(slot.dc, 0) + 1
        slot.clients += 1
        slot.bytes += size
        return pair


def plan_failover(
    state: FleetState, scope: Scope, target: Target, mode: Mode = "emergency"
) -> Plan:
    """Plan moving the clients of *scope* to *target*; see the module docstring for rules.

    Raises :class:`PlanError` (or :class:`~ppo_dr.errors.UnsafeInputError` for a
    malformed id) when the request itself is wrong; a client that cannot be moved is a
    :class:`Refusal` in the plan, not an error.
    """
    fleet = state.fleet
    if mode not in MODES:
        raise PlanError(f"mode {mode!r} unknown: use one of {', '.join(MODES)}")
    now = aware(state.now, "now")
    down = frozenset(known_server(fleet, s, "down server") for s in state.down)
    provisionable = frozenset(
        known_dc(fleet, check_id(d, "data centre id")).id for d in state.provisionable
    )
    snapshots = tuple(checked_snapshot(s) for s in state.snapshots)
    state = FleetState(fleet, state.placements, snapshots, now, down, provisionable)
    scope = checked_scope(fleet, scope)
    target = checked_target(fleet, target, scope, down)

    placements = {c.id: c.server for c in fleet.clients}
    placements.update(state.placements)
    clients = clients_in(fleet, placements, scope)
    country = target_country(fleet, target)
    if clients and country is not None and not any(country in c.countries for c in clients):
        raise PlanError(
            f"no client of {scope.describe()} allows {country}, where the target "
            f"({target.describe()}) is"
        )

    sizes = client_sizes(fleet, placements, state.snapshots)
    seed = digest(
        {
            "mode": mode,
            "scope": scope_data(scope),
            "target": target_data(target),
            "clients": [[c.id, placements[c.id]] for c in clients],
        }
    )
    planner = _Planner(state, scope, target, placements, sizes, seed)
    for snapshot in state.snapshots:
        planner.snapshots_of.setdefault(snapshot.client_id, []).append(snapshot)
    planner.build_slots(server_load(placements, sizes))

    moves: list[ClientMove] = []
    refusals: list[Refusal] = []
    # Largest first: big clients get the widest choice, small ones fill the gaps.
    for client in sorted(clients, key=lambda c: (-sizes[c.id], c.id)):
        source = check_id(placements[client.id], f"placement of client {client.id!r}")
        if mode == "planned":
            size = sizes[client.id]
            move, why = planned_source(fleet, down, client.id, source, size, planner.current_pair)
        else:
            catalogued = planner.snapshots_of.get(client.id, ())
            move, why = emergency_source(fleet, down, catalogued, client.id, source)
        if move is None:
            refusals.append(Refusal(client.id, why))
            continue
        slot, why = planner.choose(client, source, move.size_bytes)
        if slot is None:
            refusals.append(Refusal(client.id, why))
            continue
        pair = planner.place(client, slot, move.size_bytes)
        moves.append(with_target(move, slot.server_id, pair))
    provisions = tuple(
        ProvisionRequest(s.server_id, s.dc, PROVISION_TEMPLATE, s.pair or ())
        for s in sorted(planner.slots.values(), key=lambda s: s.server_id)
        if s.new
    )
    draft = Plan(
        plan_id="",
        mode=mode,
        scope=scope,
        target=target,
        created_at=now,
        moves=tuple(sorted(moves, key=lambda m: m.client_id)),
        provisions=provisions,
        refusals=tuple(sorted(refusals, key=lambda r: r.client_id)),
    )
    return with_id(draft)
