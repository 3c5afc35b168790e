"""Judging one fault: from what the lab's records showed to the issue's result row.

Pure: :class:`Observation` is everything the runner read back (the store, the
outbox, the workload's log of acknowledged writes, the journals through the front
door), :func:`judge` applies the fault's must-hold rules to it and returns the
:class:`ChaosResult` the JSON and the HTML report print. Nothing here is assumed: a
value the runner could not observe is ``None`` and fails the rule that needs it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from ppo_dr.lab.chaos.catalogue import FaultSpec

#: The keys of one fault's JSON object, in the issue's order.
RESULT_KEYS: Final = (
    "fault",
    "target",
    "passed",
    "detected_after_s",
    "incidents_opened",
    "pages_sent",
    "duplicate_notices",
    "rto_s",
    "acked_writes_lost",
    "lost_beyond_rpo",
    "snapshots_intact",
    "notes",
)


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """What every fault's verdict reads, whichever side it hit.

    One record for the fields both :class:`Observation` and the mirror verdict's
    ``MirrorObservation`` judge, so a rule on them reads the same names in both.
    ``notice_keys`` are the outbox idempotency keys of the fault's incidents, one per
    line written (a key twice is a duplicate notice); ``lost_seqs`` are acknowledged
    writes missing from a client's journal, with the time each was sent; ``problems``
    what the runner could not do or see in time.
    """

    fault: str
    target: str
    injected_at: datetime
    healed_at: datetime | None = None
    healthy_at: datetime | None = None
    pages: tuple[datetime, ...] = ()
    notice_keys: tuple[str, ...] = ()
    lost_seqs: dict[str, tuple[tuple[int, datetime], ...]] | None = None
    snapshots_intact: bool | None = None
    problems: tuple[str, ...] = ()

    def lost_by_client(self) -> dict[str, tuple[int, ...]]:
        """The result row's ``lost``: client -> sequence numbers of the writes lost."""
        return {c: tuple(seq for seq, _ in seqs) for c, seqs in (self.lost_seqs or {}).items()}


@dataclass(frozen=True, slots=True)
class Observation(FaultWindow):
    """What the records say happened between the injection and healthy-again.

    ``incidents`` are the outage incidents opened in that window (``(id, opened_at)``),
    ``other_incidents`` the other kinds (stale mirrors, ...), by kind. ``lost_seqs``
    (see :class:`FaultWindow`) count a write as acknowledged when its ack came within
    ``ack_window_s``, the workload's request timeout; ``snapshot_at`` is when the
    restored (or, without a failover, the newest) snapshot of that client was taken
    (a snapshot run's time is taken before it reads a byte).
    """

    first_failed_at: datetime | None = None
    incidents: tuple[tuple[int, datetime], ...] = ()
    other_incidents: tuple[str, ...] = ()
    failover_state: str | None = None
    failover_steps: tuple[tuple[str, datetime], ...] = ()
    rto_s: float | None = None
    clients: tuple[str, ...] = ()
    snapshot_at: dict[str, datetime] = field(default_factory=dict)
    ack_window_s: float = 2.0
    snapshots_before: int = 0
    snapshots_taken_of_broken: int = 0
    misplaced: tuple[str, ...] = ()  # restores from the lost DC or outside a residency


@dataclass(frozen=True, slots=True)
class ChaosResult:
    """One fault's row: the issue's JSON keys, plus the events of its timeline chart."""

    fault: str
    target: str
    passed: bool
    detected_after_s: float | None
    incidents_opened: int
    pages_sent: int
    duplicate_notices: int
    rto_s: float | None
    acked_writes_lost: int | None
    lost_beyond_rpo: int | None
    snapshots_intact: bool | None
    notes: list[str]
    events: list[tuple[str, float]] = field(default_factory=list)  # (what, s after injection)
    lost: dict[str, tuple[int, ...]] = field(default_factory=dict)  # client -> seqs lost

    def as_json(self) -> dict[str, Any]:
        """The issue's object: exactly :data:`RESULT_KEYS`, nothing else."""
        return {key: getattr(self, key) for key in RESULT_KEYS}


def seconds_after(start: datetime, at: datetime | None) -> float | None:
    """Seconds from *start* to *at*, to a tenth (None if *at* was not seen)."""
    return None if at is None else round((at - start).total_seconds(), 1)


def events_after(
    start: datetime, raw: Iterable[tuple[str, datetime | None]]
) -> list[tuple[str, float]]:
    """A timeline chart's events: (what, seconds after *start*), in time order; an event
    not seen (``None``) is left out."""
    events = [(what, seconds_after(start, at)) for what, at in raw]
    return sorted(((w, s) for w, s in events if s is not None), key=lambda e: e[1])


def window_result(
    spec: FaultSpec,
    obs: FaultWindow,
    *,
    passed: bool,
    notes: list[str],
    detected_after_s: float | None,
    incidents_opened: int,
    rto_s: float | None,
    lost: int | None,
    beyond: int | None,
    events: list[tuple[str, float]],
) -> ChaosResult:
    """The result row of a fault judged on a :class:`FaultWindow`: what the window
    itself says (target, pages, duplicate notices, snapshots intact, writes lost per
    client) taken from *obs*, what the judge worked out given."""
    return ChaosResult(
        fault=spec.name,
        target=obs.target,
        passed=passed,
        detected_after_s=detected_after_s,
        incidents_opened=incidents_opened,
        pages_sent=len(obs.pages),
        duplicate_notices=duplicates(obs.notice_keys),
        rto_s=rto_s,
        acked_writes_lost=lost,
        lost_beyond_rpo=beyond,
        snapshots_intact=obs.snapshots_intact,
        notes=notes,
        events=events,
        lost=obs.lost_by_client(),
    )


def duplicates(keys: Iterable[str]) -> int:
    """Lines beyond the first per idempotency key: messages sent twice."""
    return sum(count - 1 for count in Counter(keys).values() if count > 1)


def lost_counts(obs: Observation) -> tuple[int | None, int | None]:
    """(acknowledged writes lost, of them acknowledged before the snapshot was taken).

    A write acknowledged before the snapshot that was restored should be in it: losing
    it is a loss beyond the RPO. A write sent less than ``ack_window_s`` before the
    snapshot may have been acknowledged after it, so it is not counted. A client
    without a known snapshot counts every loss as beyond it.
    """
    if obs.lost_seqs is None:
        return None, None
    lost = beyond = 0
    for client, seqs in obs.lost_seqs.items():
        taken = obs.snapshot_at.get(client)
        lost += len(seqs)
        window = timedelta(seconds=obs.ack_window_s)
        beyond += sum(1 for _seq, sent in seqs if taken is None or sent + window < taken)
    return lost, beyond


def timeline_events(obs: Observation) -> list[tuple[str, float]]:
    """The chart's events, in seconds after the injection, in time order."""
    raw: list[tuple[str, datetime | None]] = [
        ("fault injected", obs.injected_at),
        ("first failed check", obs.first_failed_at),
    ]
    raw += [(f"incident #{number} declared", at) for number, at in obs.incidents]
    raw += [("page sent", at) for at in obs.pages]
    raw += [(f"failover: {step}", at) for step, at in obs.failover_steps]
    raw += [("healed", obs.healed_at), ("healthy again", obs.healthy_at)]
    return events_after(obs.injected_at, raw)


def judge(spec: FaultSpec, obs: Observation) -> ChaosResult:
    """Apply *spec*'s must-hold rules to *obs*; every broken rule is a note."""
    notes = list(obs.problems)
    lost, beyond = lost_counts(obs)
    dupes = duplicates(obs.notice_keys)
    opened = len(obs.incidents)
    if obs.healthy_at is None:
        notes.append("the fleet was not healthy again after the heal")
    if dupes:
        notes.append(f"{dupes} notice(s) sent twice under one idempotency key")
    if lost is None:
        notes.append("acknowledged writes could not be checked against the journals")
    if spec.expects_failover:
        notes += _outage_rules(spec, obs, opened, beyond)
    elif spec.shape == "flapping":
        if opened:
            notes.append(f"{opened} incident(s) opened for down spells below the threshold")
        if obs.pages:
            notes.append(f"{len(obs.pages)} page(s) sent for a flapping target")
        if lost:
            notes.append(f"{lost} acknowledged write(s) missing from the journals")
    else:
        notes.append(f"fault {spec.name!r} has no rules to judge it by")
    if obs.snapshots_intact is not True:
        notes.append("snapshots taken before the fault were not all intact afterwards")
    passed = not notes
    if obs.other_incidents:
        notes.append(f"also opened (not outages): {', '.join(obs.other_incidents)}")
    return window_result(
        spec,
        obs,
        passed=passed,
        notes=notes,
        detected_after_s=seconds_after(obs.injected_at, obs.first_failed_at),
        incidents_opened=opened,
        rto_s=obs.rto_s if spec.expects_failover else None,
        lost=lost,
        beyond=beyond,
        events=timeline_events(obs),
    )


def unexplained_losses(
    missing: Mapping[str, Iterable[int]], explained: Iterable[ChaosResult]
) -> dict[str, list[int]]:
    """Per client, acknowledged writes missing now that no fault's failover lost."""
    known: dict[str, set[int]] = {}
    for result in explained:
        for client, lost in result.lost.items():
            known.setdefault(client, set()).update(lost)
    out = {}
    for client, seqs in missing.items():
        left = sorted(set(seqs) - known.get(client, set()))
        if left:
            out[client] = left
    return out


def judge_soak(
    faults: list[ChaosResult],
    missing: Mapping[str, Iterable[int]] | None,
    repository_problems: list[str],
) -> ChaosResult:
    """The soak's last row: every repository verified, every client's journal checked.

    A write missing now is fine only if a fault's failover already counted it lost
    (within that fault's RPO, judged there); any other is a write lost silently.
    """
    notes = list(repository_problems)
    lost = beyond = None
    if missing is None:
        notes.append("the journals could not be read back")
    else:
        silent = unexplained_losses(missing, faults)
        lost = sum(len(set(seqs)) for seqs in missing.values())
        beyond = sum(len(seqs) for seqs in silent.values())
        notes += [
            f"{c}: {len(s)} acknowledged write(s) lost outside any fault" for c, s in silent.items()
        ]
    failed = [r.fault for r in faults if not r.passed]
    if failed:
        notes.append(f"faults that did not hold: {', '.join(failed)}")
    return ChaosResult(
        fault="soak-final",
        target="fleet",
        passed=not notes,
        detected_after_s=None,
        incidents_opened=sum(r.incidents_opened for r in faults),
        pages_sent=sum(r.pages_sent for r in faults),
        duplicate_notices=sum(r.duplicate_notices for r in faults),
        rto_s=max((r.rto_s for r in faults if r.rto_s is not None), default=None),
        acked_writes_lost=lost,
        lost_beyond_rpo=beyond,
        snapshots_intact=not repository_problems,
        notes=notes,
    )


def _outage_rules(spec: FaultSpec, obs: Observation, opened: int, beyond: int | None) -> list[str]:
    notes = []
    if opened != 1:
        notes.append(f"{opened} outage incidents opened, expected exactly one")
    if obs.first_failed_at is None:
        notes.append("the probe recorded no failed check of the target")
    if not obs.pages:
        notes.append("nobody was paged")
    if obs.failover_state != "done":
        notes.append(f"the failover did not complete (state: {obs.failover_state or 'none'})")
    if obs.rto_s is None:
        notes.append("no RTO recorded by the failover")
    if beyond:
        notes.append(f"{beyond} write(s) acknowledged before the restored snapshot were lost")
    notes += list(obs.misplaced)
    if spec.name == "disk" and obs.snapshots_taken_of_broken:
        notes.append(f"{obs.snapshots_taken_of_broken} snapshot(s) taken of the broken data root")
    return notes


class QuietFacts(Protocol):
    """What a fault that must page nobody and lose nothing is judged on."""

    @property
    def outage_incidents(self) -> int: ...
    @property
    def pages(self) -> tuple[datetime, ...]: ...
    @property
    def notice_keys(self) -> tuple[str, ...]: ...
    @property
    def lost(self) -> int | None: ...
    @property
    def snapshots_intact(self) -> bool | None: ...


def quiet_rules(what: str, facts: QuietFacts) -> list[str]:
    """The rules of a fault that must page nobody and lose nothing (*what* names it in
    the notes: "damaged data at rest", "a killed orchestrator"): one note per broken one."""
    notes = []
    if facts.outage_incidents:
        notes.append(f"{facts.outage_incidents} outage incident(s) for {what}")
    if facts.pages:
        notes.append(f"{len(facts.pages)} page(s) sent for {what}")
    dupes = duplicates(facts.notice_keys)
    if dupes:
        notes.append(f"{dupes} notice(s) sent twice under one idempotency key")
    if facts.lost is None:
        notes.append("acknowledged writes could not be checked against the journals")
    elif facts.lost:
        notes.append(f"{facts.lost} acknowledged write(s) missing from the journals")
    if facts.snapshots_intact is not True:
        notes.append("snapshots taken before the fault were not all intact afterwards")
    return notes


def quiet_result(
    spec: FaultSpec,
    facts: QuietFacts,
    *,
    target: str,
    notes: list[str],
    passed: bool,
    detected_after_s: float | None,
    incidents_opened: int,
    events: list[tuple[str, float]],
) -> ChaosResult:
    """The result row of a fault judged by :func:`quiet_rules` (no failover: no RTO)."""
    return ChaosResult(
        fault=spec.name,
        target=target,
        passed=passed,
        detected_after_s=detected_after_s,
        incidents_opened=incidents_opened,
        pages_sent=len(facts.pages),
        duplicate_notices=duplicates(facts.notice_keys),
        rto_s=None,
        acked_writes_lost=facts.lost,
        lost_beyond_rpo=facts.lost,
        snapshots_intact=facts.snapshots_intact,
        notes=notes,
        events=events,
    )
