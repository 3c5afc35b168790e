"""Damaged data at rest (``bitflip``, ``truncate-pack``): where to hit, how, and the verdict.

Pure: :func:`choose_blob` picks the stored chunk to damage from a client's snapshot
manifest and the repository's index, :func:`damage_pack` returns the pack's bytes with
one byte flipped or cut short inside that chunk, and :func:`judge_integrity` applies
issue 10's rules to what the runner saw (:class:`IntegrityObservation`): verify names
the client, the file and the mirror; a restore from both mirrors takes the damaged
chunk from the other one and refuses nothing; every drill of the client from the
damaged mirror failed loudly (the run failed and a ``drill-failed`` incident opened);
nobody was paged; after the heal both mirrors verify clean. The I/O is in
:mod:`ppo_dr.lab.chaos.integrity_run`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

from ppo_dr.errors import LabError
from ppo_dr.lab.chaos.catalogue import FaultSpec
from ppo_dr.lab.chaos.verdict import ChaosResult, quiet_result, quiet_rules, seconds_after

Damage = Literal["bitflip", "truncate"]
#: The catalogue's fault name -> how its pack is damaged.
DAMAGE_OF: Final[dict[str, Damage]] = {"bitflip": "bitflip", "truncate-pack": "truncate"}


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One stored chunk of a client's file: where its bytes are in which pack."""

    client_id: str
    snapshot_id: str
    path: str
    blob_id: str
    pack_id: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class DamageDone:
    """What was damaged: the chunk, on which mirror, at which byte of its pack."""

    mirror_id: str
    other_mirror_id: str
    chunk: ChunkRef
    how: Damage
    at_byte: int
    pack_size: int


def choose_blob(
    client_id: str,
    snapshot_id: str,
    files: Iterable[tuple[str, int, tuple[str, ...]]],
    locations: Mapping[str, tuple[str, int, int]],
) -> ChunkRef:
    """The first chunk of the client's largest file (ties: the first path in order).

    *files* are the manifest's ``(path, size, chunk ids)``; *locations* map a blob id to
    ``(pack id, offset, stored length)`` from the index. The largest file is the seeded
    data, not the journal the workload keeps appending to, so the chunk stays in the
    snapshots taken while the fault lasts (they deduplicate against it).
    """
    usable = [
        (size, path, chunks[0])
        for path, size, chunks in files
        if chunks and chunks[0] in locations and locations[chunks[0]][2] > 0
    ]
    if not usable:
        raise LabError(f"{client_id}/{snapshot_id}: no stored chunk to damage (an empty snapshot)")
    _size, path, blob_id = min(usable, key=lambda u: (-u[0], u[1]))
    pack_id, offset, length = locations[blob_id]
    return ChunkRef(client_id, snapshot_id, path, blob_id, pack_id, offset, length)


def damage_pack(data: bytes, chunk: ChunkRef, how: Damage) -> tuple[bytes, int]:
    """*data* (the whole pack) damaged inside *chunk*, and the byte where it was.

    ``bitflip`` flips the lowest bit of the chunk's middle byte; ``truncate`` cuts the
    pack there, so the chunk, every later one and the trailer are gone.
    """
    end = chunk.offset + chunk.length
    if chunk.offset < 0 or chunk.length <= 0 or end > len(data):
        raise LabError(
            f"pack {chunk.pack_id}: chunk at {chunk.offset}+{chunk.length} lies outside "
            f"its {len(data)} bytes"
        )
    at = chunk.offset + chunk.length // 2
    if how == "truncate":
        return data[:at], at
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :], at


@dataclass(frozen=True, slots=True)
class IntegrityObservation:
    """What the runner saw between damaging a pack and verifying it again after the heal.

    ``verify_named`` are verify's problems on the damaged mirror as ``(mirror, client,
    path)``, ``other_problems`` the other mirror's (None: verify could not run).
    ``drills`` are the client's drills recorded after the damage: ``(mirror, ok)``;
    ``drill_state`` the final state of the drill the runner started.
    """

    fault: str
    injected_at: datetime
    damage: DamageDone | None = None
    verify_named: tuple[tuple[str, str, str], ...] | None = None
    verified_at: datetime | None = None
    other_problems: tuple[str, ...] | None = None
    served_by: dict[str, int] | None = None
    refused: tuple[str, ...] = ()
    restored_at: datetime | None = None
    drill_state: str | None = None
    drills: tuple[tuple[str, bool], ...] = ()
    drill_incidents: tuple[tuple[int, datetime], ...] = ()
    outage_incidents: int = 0
    pages: tuple[datetime, ...] = ()
    notice_keys: tuple[str, ...] = ()
    lost: int | None = None
    healed_at: datetime | None = None
    after_heal_problems: tuple[str, ...] | None = None
    snapshots_intact: bool | None = None
    problems: tuple[str, ...] = ()
    events: tuple[tuple[str, datetime], ...] = field(default=())


def _damage_rules(obs: IntegrityObservation, done: DamageDone) -> list[str]:
    notes = []
    chunk, bad, good = done.chunk, done.mirror_id, done.other_mirror_id
    wanted = (bad, chunk.client_id, chunk.path)
    if obs.verify_named is None:
        notes.append(f"verify --read-data of {bad} could not run")
    elif wanted not in obs.verify_named:
        said = ", ".join(sorted({f"{m}/{c or '-'}/{p or '-'}" for m, c, p in obs.verify_named}))
        notes.append(
            f"verify of {bad} did not name client {chunk.client_id}, file {chunk.path} "
            f"(it named: {said or 'nothing'})"
        )
    if obs.other_problems is None:
        notes.append(f"verify --read-data of {good} could not run")
    elif obs.other_problems:
        notes.append(f"{good}, not damaged, failed verify: {'; '.join(obs.other_problems)}")
    if obs.served_by is None:
        notes.append("the restore from both mirrors did not finish")
    else:
        if obs.refused:
            notes.append(f"the restore refused {len(obs.refused)} file(s): {obs.refused[0]}")
        if obs.served_by.get(good, 0) < 1:
            notes.append(f"the restore took nothing from {good} (served: {obs.served_by})")
    from_bad = [ok for mirror, ok in obs.drills if mirror == bad]
    if not from_bad:
        notes.append(f"no drill of {chunk.client_id} from {bad} was recorded")
    elif any(from_bad):
        notes.append(f"a drill of {chunk.client_id} from {bad} passed on damaged data")
    if obs.drill_state is not None and obs.drill_state != "FAILED" and from_bad:
        notes.append(f"the drill run ended {obs.drill_state}, not FAILED")
    if not obs.drill_incidents:
        notes.append(f"no drill-failed incident for {chunk.client_id}")
    return notes


def judge_integrity(spec: FaultSpec, obs: IntegrityObservation) -> ChaosResult:
    """Apply the damaged-data rules (module docstring) to *obs*; each broken one a note."""
    notes = list(obs.problems)
    done = obs.damage
    if done is None:
        notes.append("no pack was damaged: the fault was not injected")
    else:
        notes += _damage_rules(obs, done)
    if obs.after_heal_problems is None:
        notes.append("the repositories were not verified after the heal")
    elif obs.after_heal_problems:
        notes.append(f"still damaged after the heal: {'; '.join(obs.after_heal_problems)}")
    notes += quiet_rules("damaged data at rest", obs)
    passed = not notes
    if passed and done is not None:
        notes.append(
            f"{done.how} at byte {done.at_byte} of pack {done.chunk.pack_id[:12]} on "
            f"{done.mirror_id}: verify named client {done.chunk.client_id}, file "
            f"{done.chunk.path}; the restore took it from {done.other_mirror_id}"
        )
    start = obs.injected_at
    events = [(what, s) for what, at in obs.events if (s := seconds_after(start, at)) is not None]
    return quiet_result(
        spec,
        obs,
        target=done.mirror_id if done is not None else "-",
        notes=notes,
        passed=passed,
        detected_after_s=seconds_after(obs.injected_at, obs.verified_at),
        incidents_opened=len(obs.drill_incidents) + obs.outage_incidents,
        events=sorted(events, key=lambda e: e[1]),
    )
