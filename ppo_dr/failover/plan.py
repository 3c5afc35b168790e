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
  client's current server nor a down one. Residency is absolute: the target *and* its
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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ppo_dr.failover.model import (
    COUNTRY_RE,
    GB,
    MODES,
    PROVISION_TEMPLATE,
    SNAPSHOT_ID_MAX_LEN,
    ClientMove,
    FleetState,
    Mode,
    Plan,
    PlanError,
    ProvisionRequest,
    Refusal,
    Scope,
    SnapshotInfo,
    Target,
)
from ppo_dr.failover.plan_json import digest, human_size, scope_data, target_data, with_id
from ppo_dr.ids import check_id
from ppo_dr.inventory import Capacity, Client, DataCentre, Fleet, Server

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


# --------------------------------------------------------------------------- mirrors


def template_capacity(fleet: Fleet) -> Capacity:
    """Capacity of a newly provisioned app server: that of the fleet's largest app server.

    Largest by disk, then by clients; a fleet without app servers gets the inventory's
    default :class:`~ppo_dr.inventory.Capacity`. Providers build the template to match.
    """
    apps = fleet.servers_by_role("app")
    if not apps:
        return Capacity()
    return max(apps, key=lambda s: (s.capacity.disk_gb, s.capacity.clients, s.id)).capacity


def mirrors_for(
    fleet: Fleet,
    server_id: str,
    *,
    dc: str | None = None,
    down: frozenset[str] = frozenset(),
    countries: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """The mirror pair of *server_id*, on-site first.

    A server that declares ``mirrors`` in the fleet keeps them, on-site first (residency
    is the caller's check). Otherwise the pair is derived: the on-site mirror (same
    DC) plus one off-site mirror (another DC; same country first, then by country code,
    DC and id, so the order of *countries* never matters), skipping *down* mirrors and
    mirrors outside *countries*. Pass the countries every client of the server allows
    (the mirror runbook does the same, so both derive the same pair). Fewer than
    two ids come back when the fleet has no such mirror: the caller decides whether a
    degraded pair is acceptable. *server_id* may be a server still to be provisioned,
    then *dc* names its data centre.
    """
    sid = check_id(server_id, "server id")
    server = _server_or_none(fleet, sid)
    if server is not None:
        if dc is not None and check_id(dc, "data centre id") != server.dc:
            raise PlanError(f"server {sid!r} is in data centre {server.dc!r}, not {dc!r}")
        if server.role == "mirror":
            raise PlanError(f"server {sid!r} is a mirror server: it has no mirrors of its own")
        if server.mirrors:
            return tuple(sorted(server.mirrors, key=lambda m: _dc_of(fleet, m) != server.dc))
        dc = server.dc
    elif dc is None:
        raise PlanError(f"server {sid!r} is not in the fleet: name the data centre it will be in")
    home = _dc(fleet, check_id(dc, "data centre id"))
    allowed = None if countries is None else [_country(c) for c in countries]

    def usable(m: Server) -> bool:
        return (
            m.role == "mirror"
            and m.id != sid
            and m.id not in down
            and (allowed is None or fleet.dc(m.dc).country in allowed)
        )

    mirrors = [m for m in fleet.servers if usable(m)]
    onsite = sorted(m.id for m in mirrors if m.dc == home.id)

    def offsite_rank(m: Server) -> tuple[bool, str, str, str]:
        country = fleet.dc(m.dc).country
        return (country != home.country, country, m.dc, m.id)

    offsite = sorted((m for m in mirrors if m.dc != home.id), key=offsite_rank)
    return tuple(onsite[:1]) + tuple(m.id for m in offsite[:1])


# --------------------------------------------------------------------------- planning


@dataclass
class _Slot:
    """A server a client could land on, with what it holds now and what the plan adds."""

    server_id: str
    dc: str
    country: str
    max_clients: int
    max_bytes: int
    clients: int
    bytes: int
    new: bool  # to be provisioned by this plan
    pair: tuple[str, ...] | None  # None until its first client fixes a derived pair

    def problem(self, size: int) -> str | None:
        """Why a client of *size* bytes does not fit, or None if it does."""
        if self.clients + 1 > self.max_clients:
            return f"full ({self.clients}/{self.max_clients} clients)"
        if self.bytes + size > self.max_bytes:
            free = max(self.max_bytes - self.bytes, 0)
            return f"full (needs {human_size(size)}, {human_size(free)} free)"
        return None

    def utilisation(self, size: int) -> float:
        """The fuller of clients and disk after adding the client, 0..1."""
        return max(
            (self.clients + 1) / self.max_clients if self.max_clients else math.inf,
            (self.bytes + size) / self.max_bytes if self.max_bytes else math.inf,
        )


@dataclass
class _Planner:
    state: FleetState
    scope: Scope
    target: Target
    placements: dict[str, str]
    sizes: dict[str, int]
    seed: str
    slots: dict[str, _Slot] = field(default_factory=dict)
    snapshots_of: dict[str, list[SnapshotInfo]] = field(default_factory=dict)
    opened: dict[str, int] = field(default_factory=dict)  # provisioned per DC so far

    @property
    def fleet(self) -> Fleet:
        return self.state.fleet

    # -- where to restore from

    def restore_source(self, client: Client, source: str) -> tuple[list[SnapshotInfo], str]:
        """Reachable verified snapshots (newest per mirror, best first), or why there are none."""
        src = _server_or_none(self.fleet, source)
        src_country = self.fleet.dc(src.dc).country if src else None
        newest: dict[str, SnapshotInfo] = {}
        unverified: set[str] = set()
        unreachable: set[str] = set()
        for snap in self.snapshots_of.get(client.id, ()):
            mirror = _server_or_none(self.fleet, snap.mirror_id)
            if mirror is None or mirror.role != "mirror":
                continue
            if snap.mirror_id in self.state.down:
                unreachable.add(snap.mirror_id)
            elif not snap.verified:
                unverified.add(snap.mirror_id)
            else:
                best = newest.get(snap.mirror_id)
                if best is None or (snap.taken_at, snap.snapshot_id) > (
                    best.taken_at,
                    best.snapshot_id,
                ):
                    newest[snap.mirror_id] = snap

        def rank(snap: SnapshotInfo) -> tuple[float, bool, bool, str]:
            mirror = self.fleet.server(snap.mirror_id)
            return (
                -snap.taken_at.timestamp(),
                src is None or mirror.dc != src.dc,
                self.fleet.dc(mirror.dc).country != src_country,
                mirror.id,
            )

        ranked = sorted(newest.values(), key=rank)
        if ranked:
            return ranked, ""
        details = [f"{m} is down" for m in sorted(unreachable)]
        details += [
            f"{m} holds only unverified snapshots" for m in sorted(unverified - set(newest))
        ]
        if not details:
            details.append("no mirror has a snapshot of it catalogued")
        return [], "no verified snapshot on a reachable mirror (" + "; ".join(details) + ")"

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
            if server.role == "mirror" or server.http is None:
                continue
            clients, used = load.get(server.id, (0, 0))
            pair = None
            if server.mirrors or self.common_countries(server.id) is not None:
                pair = self.current_pair(server.id)
            self.slots[server.id] = _Slot(
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

    def choose(self, client: Client, source: str, size: int) -> tuple[_Slot | None, str]:
        """The best slot for *client*, or None and every candidate's reason for rejection."""
        down = self.state.down
        src = _server_or_none(self.fleet, source)
        home_country = self.fleet.dc(src.dc).country if src else client.countries[0]
        avoid_dc = src.dc if src is not None and source in down else None
        rejected: list[str] = []
        ranked: list[tuple[tuple[Any, ...], _Slot]] = []

        def consider(slot: _Slot, order: int) -> None:
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

    def rejection(self, client: Client, source: str, slot: _Slot, size: int) -> str | None:
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

    def pair_for(self, client: Client, slot: _Slot) -> tuple[str, ...]:
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

    def fresh_slot(self, dc: DataCentre) -> _Slot:
        """A server this plan would provision in *dc* (not yet part of the plan)."""
        n = self.opened.get(dc.id, 0) + 1
        while True:
            server_id = f"app-{dc.id[:48].rstrip('-')}-{self.seed[:6]}-{n}"
            if server_id not in self.slots and _server_or_none(self.fleet, server_id) is None:
                break
            n += 1
        capacity = template_capacity(self.fleet)
        return _Slot(
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

    def place(self, client: Client, slot: _Slot, size: int) -> tuple[str, ...]:
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
    now = _aware(state.now, "now")
    down = frozenset(_known_server(fleet, s, "down server") for s in state.down)
    provisionable = frozenset(
        _dc(fleet, check_id(d, "data centre id")).id for d in state.provisionable
    )
    snapshots = tuple(_checked_snapshot(s) for s in state.snapshots)
    state = FleetState(fleet, state.placements, snapshots, now, down, provisionable)
    scope = _checked_scope(fleet, scope)
    target = _checked_target(fleet, target, scope, down)

    placements = {c.id: c.server for c in fleet.clients}
    placements.update(state.placements)
    clients = _clients_in(fleet, placements, scope)
    country = _target_country(fleet, target)
    if clients and country is not None and not any(country in c.countries for c in clients):
        raise PlanError(
            f"no client of {scope.describe()} allows {country}, where the target "
            f"({target.describe()}) is"
        )

    sizes = _client_sizes(fleet, placements, state.snapshots)
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
    planner.build_slots(_server_load(placements, sizes))

    moves: list[ClientMove] = []
    refusals: list[Refusal] = []
    # Largest first: big clients get the widest choice, small ones fill the gaps.
    for client in sorted(clients, key=lambda c: (-sizes[c.id], c.id)):
        source = check_id(placements[client.id], f"placement of client {client.id!r}")
        if mode == "planned":
            move, why = _planned_source(planner, client, source)
        else:
            move, why = _emergency_source(planner, client, source)
        if move is None:
            refusals.append(Refusal(client.id, why))
            continue
        slot, why = planner.choose(client, source, move.size_bytes)
        if slot is None:
            refusals.append(Refusal(client.id, why))
            continue
        pair = planner.place(client, slot, move.size_bytes)
        moves.append(
            ClientMove(
                client_id=client.id,
                from_server=source,
                to_server=slot.server_id,
                source_mirror=move.source_mirror,
                snapshot_id=move.snapshot_id,
                snapshot_at=move.snapshot_at,
                fallback_mirrors=move.fallback_mirrors,
                new_mirrors=pair,
                size_bytes=move.size_bytes,
            )
        )
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


def _emergency_source(
    planner: _Planner, client: Client, source: str
) -> tuple[ClientMove | None, str]:
    """The move's restore fields from the freshest reachable verified snapshot."""
    ranked, why = planner.restore_source(client, source)
    if not ranked:
        return None, why
    best = ranked[0]
    return _partial(
        client.id,
        source,
        best.mirror_id,
        best.snapshot_id,
        best.taken_at,
        tuple(s.mirror_id for s in ranked[1:]),
        best.size_bytes,
    ), ""


def _planned_source(
    planner: _Planner, client: Client, source: str
) -> tuple[ClientMove | None, str]:
    """Planned mode: the source is up; its reachable mirrors take the final sync."""
    if source in planner.state.down:
        return None, (
            f"planned mode needs its server {source} up for the final sync, and it is "
            "down: plan an emergency failover instead"
        )
    if _server_or_none(planner.fleet, source) is None:
        return None, f"its server {source} is not in the fleet file, so it cannot be synced"
    pair = [m for m in planner.current_pair(source) if m not in planner.state.down]
    if not pair:
        return None, f"planned mode needs a reachable mirror of {source} for the final sync"
    size = planner.sizes[client.id]
    return _partial(client.id, source, pair[0], None, None, tuple(pair[1:]), size), ""


def _partial(
    client_id: str,
    source: str,
    mirror: str,
    snapshot_id: str | None,
    snapshot_at: datetime | None,
    fallbacks: tuple[str, ...],
    size: int,
) -> ClientMove:
    """A move with its restore fields set; the target fields are filled in later."""
    return ClientMove(client_id, source, "", mirror, snapshot_id, snapshot_at, fallbacks, (), size)


# --------------------------------------------------------------------------- capacity (pandas)


def _client_sizes(
    fleet: Fleet, placements: Mapping[str, str], snapshots: Sequence[SnapshotInfo]
) -> dict[str, int]:
    """Bytes per client: its newest catalogued snapshot's size, else fleet.yaml's size_gb."""
    import pandas as pd  # only here: the CLI's other commands start without pandas

    declared = {c.id: int(c.size_gb * GB) for c in fleet.clients}
    frame = pd.DataFrame(
        [(s.client_id, s.taken_at, s.snapshot_id, s.size_bytes) for s in snapshots],
        columns=["client_id", "taken_at", "snapshot_id", "size_bytes"],
    )
    newest: dict[str, int] = {}
    if not frame.empty:
        latest = frame.sort_values(["client_id", "taken_at", "snapshot_id"]).groupby(
            "client_id", sort=True
        )["size_bytes"]
        newest = {str(k): int(v) for k, v in latest.last().items()}
    return {c: newest.get(c, declared.get(c, 0)) for c in {*declared, *placements}}


def _server_load(
    placements: Mapping[str, str], sizes: Mapping[str, int]
) -> dict[str, tuple[int, int]]:
    """(clients, bytes) placed on each server now."""
    import pandas as pd

    frame = pd.DataFrame(
        [(c, s, sizes.get(c, 0)) for c, s in placements.items()],
        columns=["client_id", "server_id", "size_bytes"],
    )
    if frame.empty:
        return {}
    totals = frame.groupby("server_id").agg(
        clients=("client_id", "count"), bytes=("size_bytes", "sum")
    )
    return {str(server): (int(row.clients), int(row.bytes)) for server, row in totals.iterrows()}


# --------------------------------------------------------------------------- checks


def _server_or_none(fleet: Fleet, server_id: str) -> Server | None:
    try:
        return fleet.server(server_id)
    except KeyError:
        return None


def _dc_of(fleet: Fleet, server_id: str) -> str | None:
    server = _server_or_none(fleet, server_id)
    return None if server is None else server.dc


def _known_server(fleet: Fleet, server_id: object, what: str) -> str:
    sid = check_id(server_id, what)
    if _server_or_none(fleet, sid) is None:
        raise PlanError(f"{what} {sid!r} is not a server of fleet {fleet.name}")
    return sid


def _dc(fleet: Fleet, dc_id: str) -> DataCentre:
    try:
        return fleet.dc(dc_id)
    except KeyError:
        raise PlanError(f"no data centre {dc_id!r} in fleet {fleet.name}") from None


def _country(value: object) -> str:
    if not isinstance(value, str) or not COUNTRY_RE.fullmatch(value):
        raise PlanError(f"country {value!r} is not an ISO 3166 alpha-2 code such as 'ZA'")
    return value


def _aware(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise PlanError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _checked_snapshot(snap: SnapshotInfo) -> SnapshotInfo:
    """A catalogue row fit to plan from: ids, an aware time, a size (else PlanError)."""
    where = f"snapshot {snap.snapshot_id!r} of {snap.client_id!r} on {snap.mirror_id!r}"
    check_id(snap.client_id, "snapshot client id")
    check_id(snap.mirror_id, "snapshot mirror id")
    if (
        not isinstance(snap.snapshot_id, str)
        or not 0 < len(snap.snapshot_id) <= SNAPSHOT_ID_MAX_LEN
    ):
        raise PlanError(f"{where}: the snapshot id must be 1-{SNAPSHOT_ID_MAX_LEN} characters")
    size = snap.size_bytes
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise PlanError(f"{where}: size_bytes must be a non-negative integer, got {size!r}")
    if not isinstance(snap.verified, bool):
        raise PlanError(f"{where}: verified must be a bool, got {snap.verified!r}")
    return replace(snap, taken_at=_aware(snap.taken_at, f"{where}: taken_at"))


def _checked_scope(fleet: Fleet, scope: Scope) -> Scope:
    if isinstance(scope.clients, str):
        raise PlanError("scope.clients must be a sequence of client ids, not one string")
    chosen = [bool(scope.clients), scope.server is not None, scope.dc is not None]
    if sum(chosen) != 1:
        raise PlanError("the scope names exactly one of: clients, a server, a data centre")
    if scope.clients:
        ids = tuple(dict.fromkeys(check_id(c, "client id") for c in scope.clients))
        known = {c.id for c in fleet.clients}
        unknown = [c for c in ids if c not in known]
        if unknown:
            raise PlanError(f"no client {', '.join(map(repr, unknown))} in fleet {fleet.name}")
        return Scope(clients=ids)
    if scope.server is not None:
        sid = _known_server(fleet, scope.server, "scope server")
        if fleet.server(sid).role == "mirror":
            raise PlanError(f"scope server {sid!r} is a mirror server: it hosts no clients")
        return Scope(server=sid)
    return Scope(dc=_dc(fleet, check_id(scope.dc, "data centre id")).id)


def _checked_target(fleet: Fleet, target: Target, scope: Scope, down: frozenset[str]) -> Target:
    chosen = [target.server is not None, target.dc is not None, target.country is not None]
    if sum(chosen) > 1:
        raise PlanError("the target names at most one of: a server, a data centre, a country")
    if target.server is not None:
        sid = _known_server(fleet, target.server, "target server")
        server = fleet.server(sid)
        if server.role == "mirror" or server.http is None:
            raise PlanError(
                f"target server {sid!r} is {'a mirror' if server.role == 'mirror' else 'a spare'}"
                " server without HTTP: it cannot serve clients"
            )
        if sid in down:
            raise PlanError(f"target server {sid!r} is down")
        if scope.server == sid or (scope.dc is not None and server.dc == scope.dc):
            raise PlanError(f"target server {sid!r} is inside the scope it should take over")
        return Target(server=sid)
    if target.dc is not None:
        dc = _dc(fleet, check_id(target.dc, "data centre id")).id
        if scope.dc == dc:
            raise PlanError(f"target data centre {dc!r} is the data centre being evacuated")
        return Target(dc=dc)
    if target.country is not None:
        country = _country(target.country)
        if not any(d.country == country for d in fleet.data_centres):
            raise PlanError(f"fleet {fleet.name} has no data centre in {country}")
        return Target(country=country)
    return Target()


def _target_country(fleet: Fleet, target: Target) -> str | None:
    if target.server is not None:
        return fleet.country_of(target.server)
    if target.dc is not None:
        return fleet.dc(target.dc).country
    return target.country


def _clients_in(fleet: Fleet, placements: Mapping[str, str], scope: Scope) -> list[Client]:
    if scope.clients:
        return [fleet.client(c) for c in scope.clients]
    if scope.server is not None:
        return [c for c in fleet.clients if placements.get(c.id) == scope.server]
    servers = {s.id for s in fleet.servers_in(scope.dc or "")}
    return [c for c in fleet.clients if placements.get(c.id) in servers]
