"""Reading back what happened: the store, the outbox and the journals, for one fault.

Everything a verdict rests on comes from the lab's own records, read after the fact:
incidents and their timelines, notices, probe transitions, the failover ledger and
the snapshot catalogue from the store; the lines the channels wrote to the outbox;
the workload's log of acknowledged writes against each client's journal as the front
door serves it now.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ppo_dr.channels import read_outbox
from ppo_dr.errors import DRError, LabError
from ppo_dr.escalation import FAILOVER_APPROVAL, parse_key
from ppo_dr.fleet_access import FleetAccess
from ppo_dr.inventory import Fleet
from ppo_dr.lab.workload import read_acks
from ppo_dr.mirror.fleet_targets import mirror_targets
from ppo_dr.mirror.verify import verify
from ppo_dr.probe.graph import server_target
from ppo_dr.store import Incident, Store

#: Probe states that mean a check failed.
_FAILING = ("pending", "down")
T = TypeVar("T")


class FrontDoor(Protocol):
    """Where the lab's front door answers: its host, and how to reach it from here (on
    127.0.0.1 at once; a namespaced lab's from inside its ``wan`` namespace)."""

    @property
    def front_door_host(self) -> str: ...

    def reach_front_door(self, work: Callable[[], T]) -> T: ...


class _Loopback:
    front_door_host = "127.0.0.1"

    def reach_front_door(self, work: Callable[[], T]) -> T:
        return work()


LOOPBACK: FrontDoor = _Loopback()


def incidents_since(store: Store, since: datetime) -> list[Incident]:
    """Incidents opened at or after *since*, oldest first."""
    return [i for i in store.incidents() if i.opened_at >= since]


def first_failed_check(store: Store, servers: Iterable[str], since: datetime) -> datetime | None:
    """When the probe first saw one of *servers* failing after *since*."""
    seen = [
        move.at
        for server_id in servers
        for move in store.probe_transitions(server_target(server_id), since=since)
        if move.to_state in _FAILING
    ]
    return min(seen, default=None)


def pages_sent(store: Store, incident_ids: Iterable[int]) -> list[datetime]:
    """When each page (a notice of an escalation level) of the incidents went out."""
    return sorted(
        n.sent_at or n.created_at
        for number in incident_ids
        for n in store.notices(number)
        if n.step.startswith("page.") and n.status == "sent"
    )


def outbox_keys(outbox: Path, incident_ids: Iterable[int]) -> list[str]:
    """The idempotency key of every outbox line of the incidents, one per line."""
    wanted = set(incident_ids)
    keys = []
    for line in read_outbox(outbox):
        key = parse_key(str(line.get("key", "")))
        if key is not None and key.incident_id in wanted:
            keys.append(str(line["key"]))
    return keys


def failover_steps(store: Store, incident_id: int, plan_id: str) -> list[tuple[str, datetime]]:
    """The failover's milestones: approval, each step's last finish, the end."""
    out: list[tuple[str, datetime]] = [
        ("approved", e.at) for e in store.timeline(incident_id) if e.kind == FAILOVER_APPROVAL
    ][:1]
    finished: dict[str, datetime] = {}
    for step in store.failover_steps(plan_id):
        if step.finished_at is not None and step.state == "done":
            finished[step.step] = max(step.finished_at, finished.get(step.step, step.finished_at))
    out += sorted(finished.items(), key=lambda item: item[1])
    record = store.failover(plan_id)
    if record is not None and record.finished_at is not None:
        out.append((f"finished ({record.state})", record.finished_at))
    return out


def restored_snapshots(store: Store, plan_id: str) -> tuple[dict[str, datetime], float | None]:
    """Per client moved: when its restored snapshot was taken; and the worst RTO."""
    taken: dict[str, datetime] = {}
    rtos = []
    for result in store.failover_results(plan_id):
        if result.rto_seconds is not None:
            rtos.append(result.rto_seconds)
        for snap in store.snapshots(result.client_id, result.source_mirror):
            if snap.snapshot_id == result.snapshot_id:
                taken[result.client_id] = snap.taken_at
    return taken, (round(max(rtos), 1) if rtos else None)


def misplaced(fleet: Fleet, store: Store, plan_id: str, lost_dc: str) -> list[str]:
    """Clients a DC failover restored from a mirror in the lost DC, or into a country
    their residency does not allow: one sentence each."""
    out = []
    for result in store.failover_results(plan_id):
        if result.outcome != "ok":
            continue
        client = fleet.client(result.client_id)
        if result.source_mirror and fleet.server(result.source_mirror).dc == lost_dc:
            out.append(f"{client.id} restored from {result.source_mirror}, in the lost DC")
        country = fleet.country_of(result.to_server)
        if country not in client.countries:
            out.append(
                f"{client.id} restored into {result.to_server} ({country}); "
                f"allowed: {', '.join(client.countries)}"
            )
    return out


def newest_snapshots(store: Store, clients: Iterable[str]) -> dict[str, datetime]:
    """Per client: when its newest complete snapshot (on any mirror) was taken."""
    out = {}
    for client in clients:
        complete = [s.taken_at for s in store.snapshots(client) if s.status == "complete"]
        if complete:
            out[client] = max(complete)
    return out


def complete_snapshot_ids(store: Store, clients: Iterable[str]) -> set[tuple[str, str, str, str]]:
    """(server, client, mirror, snapshot id) of every complete snapshot of *clients*."""
    return {
        (s.server_id, s.client_id, s.mirror_id, s.snapshot_id)
        for client in clients
        for s in store.snapshots(client)
        if s.status == "complete"
    }


def verify_repositories(
    fleet: Fleet, servers: Iterable[str], placements: Mapping[str, str]
) -> list[str]:
    """Re-read and re-hash (``verify --read-data``) every repository of *servers* on
    every mirror; one sentence per problem, or per repository that could not be read.

    *placements* say which servers are homes (a spare is one while it holds clients).
    """
    found: list[str] = []
    with FleetAccess(fleet) as access:
        for server_id in sorted(set(servers)):
            try:
                connected = mirror_targets(fleet, server_id, access, placements=placements)
                found += [
                    f"{m}: {server_id}'s repository unreachable: {why}"
                    for m, why in connected.unreachable.items()
                ]
                for target in connected.targets:
                    report = verify(target, key=access.mirror_key, read_data=True)
                    found += [
                        f"{p.mirror_id}: {server_id}'s repository, client {p.client_id or '-'}, "
                        f"snapshot {p.snapshot_id or '-'}, file {p.path or '-'}: {p.detail}"
                        for p in report.problems
                    ]
            except DRError as exc:
                found.append(f"{server_id}'s repositories could not be verified: {exc}")
    return found


def journal_seqs(
    fleet: Fleet, client_id: str, timeout: float = 10.0, door: FrontDoor = LOOPBACK
) -> set[int]:
    """The seqs in *client_id*'s journal, read through the lab's front door (its home
    now); a URL anywhere else is refused, so no request leaves the lab."""
    url = fleet.client(client_id).url.rstrip("/") + "/journal?after=0"
    if not url.startswith(f"http://{door.front_door_host}:"):
        raise LabError(f"{client_id}: its URL {url} is not the lab's front door")

    def read() -> Any:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - the lab's
            return json.loads(answer.read())

    try:
        records: Any = door.reach_front_door(read)
    except (OSError, ValueError) as exc:
        raise LabError(f"{client_id}: cannot read its journal at {url}: {exc}") from exc
    return {r["seq"] for r in records if isinstance(r, dict) and isinstance(r.get("seq"), int)}


def new_losses(
    fleet: Fleet,
    acks_file: Path,
    clients: Iterable[str],
    lost_before: Mapping[str, set[int]],
    door: FrontDoor = LOOPBACK,
) -> dict[str, tuple[tuple[int, datetime], ...]]:
    """:func:`lost_writes`, less those already missing before the fault (*lost_before*):
    an earlier fault's losses are that fault's."""
    return {
        c: tuple(w for w in seqs if w[0] not in lost_before.get(c, set()))
        for c, seqs in lost_writes(fleet, acks_file, clients, door).items()
    }


def lost_writes(
    fleet: Fleet, acks_file: Path, clients: Iterable[str], door: FrontDoor = LOOPBACK
) -> dict[str, tuple[tuple[int, datetime], ...]]:
    """Per client: acknowledged writes missing from its journal, with their ack times.

    The log is read before the journals, so every ack in it was given before the
    journal was read: a seq absent from the journal is a write lost, not one in flight.
    """
    acks = read_acks(acks_file)
    out = {}
    for client in clients:
        present = journal_seqs(fleet, client, door=door)
        out[client] = tuple(
            (a["seq"], datetime.fromisoformat(a["ts"]))
            for a in acks
            if a["client"] == client and a["seq"] not in present
        )
    return out
