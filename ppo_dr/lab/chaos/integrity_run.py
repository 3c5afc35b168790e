"""Damaging a pack on one mirror of the lab, following what notices, and putting it back.

One client of the seed's target server; the mirror its next drill will read from
(the drill rotation's own pure functions, fed the store's drill history), so the drill
meets the damage. Then, in order: the pack edited through the mirror's own SFTP
(temporary name, renamed into place); ``verify --read-data`` of both mirrors for that
client; a restore from both mirrors, the damaged one first, into a scratch directory;
a ``dr-drill`` of that client through Prefect; the original pack bytes put back;
both mirrors verified again. The judging is :func:`ppo_dr.lab.chaos.integrity.judge_integrity`.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from ppo_dr.errors import DRError
from ppo_dr.failover.drill import (
    DRILL_FAILED_KIND,
    canary_targets,
    histories,
    kinds_by_client,
    pick_canaries,
)
from ppo_dr.fleet_access import FleetAccess
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.chaos import records
from ppo_dr.lab.chaos.catalogue import FaultSpec
from ppo_dr.lab.chaos.fleets import ChaosFleet
from ppo_dr.lab.chaos.flow_runs import FlowRuns
from ppo_dr.lab.chaos.integrity import (
    DAMAGE_OF,
    DamageDone,
    IntegrityObservation,
    choose_blob,
    damage_pack,
    judge_integrity,
)
from ppo_dr.lab.chaos.sequence import pick_target
from ppo_dr.lab.chaos.verdict import ChaosResult
from ppo_dr.mirror.fleet_targets import mirror_targets
from ppo_dr.mirror.repository import Repository
from ppo_dr.mirror.restore import restore
from ppo_dr.mirror.results import MirrorTarget
from ppo_dr.mirror.verify import verify
from ppo_dr.store import Store
from ppo_dr.transport.local import LocalRemote

#: The drill deployment a damaged client is drilled with.
DRILL_DEPLOYMENT = "dr-drill/dr-drill"


@dataclass(frozen=True)
class IntegrityContext:
    """What the damaged-data faults need of a chaos run."""

    fleet: ChaosFleet
    store: Store
    operator: FlowRuns
    rng: random.Random
    say: Callable[[str], None]
    ready: Callable[[list[str]], None]  # healthy, and a snapshot of each client


def _now() -> datetime:
    return datetime.now(UTC)


def drill_mirror(fleet: Fleet, store: Store, placements: dict[str, str], client_id: str) -> str:
    """The mirror the next drill of *client_id* reads from (the rotation's choice)."""
    history = histories(store.drills(), kinds_by_client(fleet, placements))
    canaries = pick_canaries([client_id], history, _now().date())
    [target] = canary_targets(fleet, placements, canaries)
    return target.mirror_id


def _verify_client(
    target: MirrorTarget, key: bytes | None, client_id: str
) -> list[tuple[str, str, str, str]]:
    """verify --read-data of *client_id* on *target*: (mirror, client, path, detail)."""
    report = verify(target, key=key, client_id=client_id, read_data=True)
    return [(p.mirror_id, p.client_id, p.path, p.detail) for p in report.problems]


def _said(problems: list[tuple[str, str, str, str]]) -> tuple[str, ...]:
    return tuple(f"{m}: {c or '-'}/{p or '-'}: {d}" for m, c, p, d in problems)


def exercise_integrity(ctx: IntegrityContext, spec: FaultSpec) -> ChaosResult:
    """Damage a pack as *spec* says, follow verify, restore and drill, heal, judge."""
    store = ctx.store
    model = load_fleet(ctx.fleet.fleet_file)
    placements = {p.client_id: p.server_id for p in store.placements()}
    servers = [s.id for s in model.servers if s.role in ("app", "spare")]
    home = pick_target(placements, servers, ctx.rng)
    client = ctx.rng.choice(sorted(c for c, s in placements.items() if s == home))
    ctx.ready([client])
    before = records.complete_snapshot_ids(store, [client])
    lost_before = {
        s for s, _ in records.lost_writes(model, ctx.fleet.acks_file, [client], ctx.fleet)[client]
    }
    obs = IntegrityObservation(fault=spec.name, injected_at=_now())
    events: list[tuple[str, datetime]] = []
    with FleetAccess(model) as access:
        key = access.mirror_key
        try:
            connected = mirror_targets(model, home, access, placements=placements)
            bad_id = drill_mirror(model, store, placements, client)
            by_id = {t.mirror_id: t for t in connected.targets}
            if connected.unreachable or bad_id not in by_id or len(by_id) != 2:
                raise DRError(f"{home}'s two mirrors are not both reachable: {connected}")
            bad = by_id[bad_id]
            [good] = [t for m, t in by_id.items() if m != bad_id]
            repo = Repository.open(bad.remote, bad.repo_path, bad.mirror_id, key)
            snapshot_id = repo.list_snapshot_ids(client)[-1]
            manifest = repo.read_manifest(client, snapshot_id)
            locations = {
                b: (loc.pack_id, loc.offset, loc.length)
                for b, loc in repo.load_index().blobs.items()
            }
            files = [(e.path, e.size, e.chunks) for e in manifest.entries]
            chunk = choose_blob(client, snapshot_id, files, locations)
            pack_path = repo.pack_path(chunk.pack_id)
            original = bad.remote.read_bytes(pack_path)
        except DRError as exc:
            return judge_integrity(spec, replace(obs, problems=(f"{type(exc).__name__}: {exc}",)))
        damaged, at = damage_pack(original, chunk, DAMAGE_OF[spec.name])
        done = DamageDone(
            bad.mirror_id, good.mirror_id, chunk, DAMAGE_OF[spec.name], at, len(original)
        )
        ctx.say(
            f"{spec.name}: pack {chunk.pack_id[:12]} on {bad.mirror_id} ({client}, {chunk.path}) "
            f"damaged at byte {at}"
        )
        obs = replace(obs, injected_at=_now(), damage=done)
        bad.remote.write_bytes(pack_path, damaged, 0o600)
        events.append(("pack damaged", obs.injected_at))
        try:
            obs = _follow(ctx, obs, bad, good, key, events)
        finally:
            bad.remote.write_bytes(pack_path, original, 0o600)
            healed = _now()
            events.append(("pack put back", healed))
            ctx.say(f"  pack {chunk.pack_id[:12]} put back on {bad.mirror_id}")
        after: tuple[str, ...] | None
        try:
            after = _said(_verify_client(bad, key, client) + _verify_client(good, key, client))
        except DRError as exc:
            after, obs = None, replace(obs, problems=(*obs.problems, f"verify after heal: {exc}"))
    opened = records.incidents_since(store, obs.injected_at)
    ids = [i.id for i in opened]
    try:
        missing = records.lost_writes(model, ctx.fleet.acks_file, [client], ctx.fleet)[client]
        lost: int | None = len([s for s, _ in missing if s not in lost_before])
    except DRError as exc:
        lost, obs = None, replace(obs, problems=(*obs.problems, str(exc)))
    obs = replace(
        obs,
        drills=tuple(
            (d.mirror_id, d.ok) for d in store.drills(client) if d.started_at >= obs.injected_at
        ),
        drill_incidents=tuple((i.id, i.opened_at) for i in opened if i.kind == DRILL_FAILED_KIND),
        outage_incidents=sum(1 for i in opened if i.kind == "outage"),
        pages=tuple(records.pages_sent(store, ids)),
        notice_keys=tuple(records.outbox_keys(ctx.fleet.outbox(), ids)),
        lost=lost,
        healed_at=healed,
        after_heal_problems=after,
        snapshots_intact=after == () and before <= records.complete_snapshot_ids(store, [client]),
        events=tuple(events + [(f"incident #{i.id} ({i.kind})", i.opened_at) for i in opened]),
    )
    for incident in opened:  # the on-call closes them: the next fault starts quiet
        store.resolve(incident.id, by="chaos", note=f"chaos run: {spec.name} healed")
    return judge_integrity(spec, obs)


def _follow(
    ctx: IntegrityContext,
    obs: IntegrityObservation,
    bad: MirrorTarget,
    good: MirrorTarget,
    key: bytes | None,
    events: list[tuple[str, datetime]],
) -> IntegrityObservation:
    """Verify both mirrors, restore from both, drill the client: what each showed."""
    assert obs.damage is not None
    chunk = obs.damage.chunk
    client = chunk.client_id
    try:
        named = _verify_client(bad, key, client)
        other = _verify_client(good, key, client)
        obs = replace(
            obs,
            verify_named=tuple((m, c, p) for m, c, p, _d in named),
            verified_at=_now(),
            other_problems=_said(other),
        )
        events.append(("verify named the damage", obs.verified_at or _now()))
        ctx.say(f"  verify of {bad.mirror_id}: {len(named)} problem(s); {_said(named)[:1]}")
        with tempfile.TemporaryDirectory(prefix="chaos-restore-") as scratch:
            result = restore(
                [bad, good],
                client,
                chunk.snapshot_id,
                LocalRemote(),
                str(Path(scratch) / client),
                key=key,
                processes=0,
            )
        obs = replace(
            obs, served_by=dict(result.served_by), refused=tuple(result.refused), restored_at=_now()
        )
        events.append(("restore from both mirrors", obs.restored_at or _now()))
        ctx.say(f"  restore from both mirrors: served {result.served_by}")
    except DRError as exc:
        obs = replace(obs, problems=(*obs.problems, f"{type(exc).__name__}: {exc}"))
    try:
        state = ctx.operator.run_to_end(DRILL_DEPLOYMENT, {"clients": [client]})
    except DRError as exc:
        state = None
        obs = replace(obs, problems=(*obs.problems, f"the drill could not be run: {exc}"))
    events.append((f"drill {state or 'not run'}", _now()))
    ctx.say(f"  drill of {client}: {state}")
    return replace(obs, drill_state=state)
