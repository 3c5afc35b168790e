"""Checks on what the failover planner is asked: ids, times, scope and target (pure).

Every function returns the checked value, normalised (known ids, UTC times), or raises
:class:`~ppo_dr.placement.PlanError` (:class:`~ppo_dr.errors.UnsafeInputError` for a
malformed id) naming what is wrong, so the planner itself only sees sound input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from ppo_dr.failover.model import SNAPSHOT_ID_MAX_LEN, Scope, SnapshotInfo, Target
from ppo_dr.failover.plan_json import Plan
from ppo_dr.failover.scratch import is_scratch_server
from ppo_dr.ids import check_id
from ppo_dr.inventory import Client, Fleet, Server
from ppo_dr.placement import PlanError, country_code, known_dc, server_or_none


def known_server(fleet: Fleet, server_id: object, what: str) -> str:
    """*server_id* checked as an id of a server of *fleet* (*what* names it in errors)."""
    sid = check_id(server_id, what)
    if server_or_none(fleet, sid) is None:
        raise PlanError(f"{what} {sid!r} is not a server of fleet {fleet.name}")
    return sid


def server_identity(server: Server) -> str:
    """A short digest of what makes *server* the same server (address, keys' place, DC,
    role, data root, mirrors); its capacity is left out, since editing it is harmless."""
    fields = server.model_dump_json(exclude={"capacity"}).encode()
    return hashlib.blake2b(fields, digest_size=8).hexdigest()


def identities(fleet: Fleet, servers: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """(id, :func:`server_identity`) of each of *servers* in *fleet*; ``-`` for one not in
    it, which :func:`still_in_fleet` then reports lost."""
    return tuple(
        (s, server_identity(found) if (found := server_or_none(fleet, s)) else "-") for s in servers
    )


def still_in_fleet(
    fleet: Fleet, expected: Iterable[tuple[str, str]], fleet_file: object, what: str
) -> Fleet:
    """*fleet* again, if every server of *expected* (from :func:`identities`) is still in
    it unchanged; else :class:`PlanError` naming the servers lost or changed.

    A failover re-reads the fleet file at each step, since provisioning adds servers to
    it; the file may grow under a run but not lose or change a server the run uses
    (*what* says which part), which would otherwise send one step to one host and the
    next to another, or fail with an unknown-server error that says nothing of why.
    """
    gone: list[str] = []
    changed: list[str] = []
    for server_id, identity in expected:
        now = server_or_none(fleet, server_id)
        if now is None:
            gone.append(server_id)
        elif server_identity(now) != identity:
            changed.append(server_id)
    problems = [f"lost {', '.join(gone)}"] if gone else []
    problems += [f"changed {', '.join(changed)}"] if changed else []
    if problems:
        raise PlanError(
            f"fleet file {fleet_file} {' and '.join(problems)} during the run, which {what} "
            "uses; a fleet file may only grow while a failover runs"
        )
    return fleet


def aware(value: object, what: str) -> datetime:
    """*value* as a UTC datetime; a naive or non-datetime value is refused."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise PlanError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def checked_snapshot(snap: SnapshotInfo) -> SnapshotInfo:
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
    return replace(snap, taken_at=aware(snap.taken_at, f"{where}: taken_at"))


def checked_scope(fleet: Fleet, scope: Scope) -> Scope:
    """*scope* naming exactly one of clients, a server, a data centre, all in *fleet*."""
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
        sid = known_server(fleet, scope.server, "scope server")
        if fleet.server(sid).role == "mirror":
            raise PlanError(f"scope server {sid!r} is a mirror server: it hosts no clients")
        return Scope(server=sid)
    return Scope(dc=known_dc(fleet, check_id(scope.dc, "data centre id")).id)


def checked_target(fleet: Fleet, target: Target, scope: Scope, down: frozenset[str]) -> Target:
    """*target* naming at most one place, outside *scope*, able to serve and not down."""
    chosen = [target.server is not None, target.dc is not None, target.country is not None]
    if sum(chosen) > 1:
        raise PlanError("the target names at most one of: a server, a data centre, a country")
    if target.server is not None:
        sid = known_server(fleet, target.server, "target server")
        server = fleet.server(sid)
        if server.role == "mirror" or server.http is None:
            raise PlanError(
                f"target server {sid!r} is {'a mirror' if server.role == 'mirror' else 'a spare'}"
                " server without HTTP: it cannot serve clients"
            )
        if is_scratch_server(sid):
            raise PlanError(
                f"target server {sid!r} is a drill's scratch server: the drill releases it"
            )
        if sid in down:
            raise PlanError(f"target server {sid!r} is down")
        if scope.server == sid or (scope.dc is not None and server.dc == scope.dc):
            raise PlanError(f"target server {sid!r} is inside the scope it should take over")
        return Target(server=sid)
    if target.dc is not None:
        dc = known_dc(fleet, check_id(target.dc, "data centre id")).id
        if scope.dc == dc:
            raise PlanError(f"target data centre {dc!r} is the data centre being evacuated")
        return Target(dc=dc)
    if target.country is not None:
        country = country_code(target.country)
        if not any(d.country == country for d in fleet.data_centres):
            raise PlanError(f"fleet {fleet.name} has no data centre in {country}")
        return Target(country=country)
    return Target()


def target_country(fleet: Fleet, target: Target) -> str | None:
    """The country the target lies in, or None for an automatic target."""
    if target.server is not None:
        return fleet.country_of(target.server)
    if target.dc is not None:
        return fleet.dc(target.dc).country
    return target.country


def clients_in(fleet: Fleet, placements: Mapping[str, str], scope: Scope) -> list[Client]:
    """The clients the (checked) *scope* moves, given where each lives now."""
    if scope.clients:
        return [fleet.client(c) for c in scope.clients]
    if scope.server is not None:
        return [c for c in fleet.clients if placements.get(c.id) == scope.server]
    servers = {s.id for s in fleet.servers_in(scope.dc or "")}
    return [c for c in fleet.clients if placements.get(c.id) in servers]


def checked_plan(fleet: Fleet, plan: Plan) -> Plan:
    """*plan* if every client, server, mirror and data centre it names is in *fleet* (a
    server the plan provisions counts), else PlanError naming the first that is not.

    A plan handed in as JSON (a file, a UI parameter) is checked so before any step acts
    on it: an approved plan edited to name another mirror or server is refused whole.
    """
    provisioned = {p.server_id for p in plan.provisions}
    for p in plan.provisions:
        known_dc(fleet, p.dc)
        for mirror in p.mirrors:
            known_server(fleet, mirror, f"mirror of provisioned {p.server_id}")
    clients = {c.id for c in fleet.clients}
    for move in plan.moves:
        if move.client_id not in clients:
            raise PlanError(f"plan moves client {move.client_id!r}, not in fleet {fleet.name}")
        where = f"move of {move.client_id}:"
        known_server(fleet, move.from_server, f"{where} from server")
        if move.to_server not in provisioned:
            known_server(fleet, move.to_server, f"{where} to server")
        for named in (move.source_mirror, *move.fallback_mirrors, *move.new_mirrors):
            if named is not None:
                known_server(fleet, named, f"{where} mirror")
    return plan
