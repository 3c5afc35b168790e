"""Hand-over between probe runs: the rules of the probe's lease (pure, no I/O).

The probe is one long flow run per schedule period. Under load a run starts 45-90 s
late; a run that stopped at the end of its period left that long with nobody probing.
So a run does not stop at the end of its period: it probes until its successor has
taken over, and the lease (:class:`~ppo_dr.store.ProbeLease`, one store row) names the
one run that feeds the state machine and records, so overlapping runs never count a
check twice or open an incident twice.

The hand-over, step by step:

1. A new run **claims** the lease (:func:`claimed`): free, released, or expired (its
   holder stopped renewing: SIGKILL, a crashed serve) → it holds it and probes at
   once. Held by an older run (earlier rank = earlier schedule slot) that is alive →
   it takes it and remembers that run as ``previous`` (or, if that run was itself
   still waiting, the run that is probing). Held by a newer run → it leaves the lease
   alone and stands down without probing.
2. It then **waits** (:func:`handover`) until ``previous`` has finished its last
   cycle (``previous_released``) or has been silent for the lease's time-to-live, and
   only then seeds from the store and probes: the old run's last cycle is recorded
   before the new run reads the store.
3. The old run **renews** (:func:`renewed`) at the start of every cycle; once the
   holder is someone else it stops before checking, flushes its counts and
   **releases** (:func:`released`), which ends the successor's wait: the hole is one
   probe interval, as between any two cycles.
4. A run that was never taken over stops after :func:`run_limit_s` (three periods),
   releasing the lease, so a stuck schedule leaves the watchdog to page rather than
   one run probing for ever.

Not covered: a holder frozen (SIGSTOP) past the time-to-live and taken over may, when
it thaws mid-cycle, finish that one cycle before it sees it lost the lease; the
incident it might open is the one the new holder would open (idempotent by key).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Final

from ppo_dr.store import ProbeLease

#: The lease's name (one probe per store).
LEASE_NAME: Final = "probe"
#: A run that no successor took over from stops after this many periods.
MAX_PERIODS: Final = 3
#: Shortest time-to-live: a holder silent this long is presumed dead (short: a run
#: that starts just after its predecessor was killed waits this long before probing).
MIN_TTL: Final = timedelta(seconds=10)


class Handover(Enum):
    """What a run that claimed the lease does next."""

    PROBE = "probe"  # it holds the lease and nobody is finishing a cycle: record
    WAIT = "wait"  # it holds the lease; the run it took over from is finishing its cycle
    STAND_DOWN = "stand-down"  # another run holds the lease: exit without probing


def lease_ttl(interval_s: float, timeout_s: float) -> timedelta:
    """How long a holder may go without renewing before it is presumed dead: three
    cycles of checks that all time out, at least :data:`MIN_TTL` (10 s in the lab's
    fast timings, 45 s with production's)."""
    return max(MIN_TTL, timedelta(seconds=3 * (interval_s + timeout_s)))


def run_limit_s(period_s: float) -> float:
    """How long a run probes when no successor takes over: :data:`MAX_PERIODS` periods."""
    return MAX_PERIODS * period_s


def expired(lease: ProbeLease, now: datetime, ttl: timedelta) -> bool:
    """The holder has not renewed for longer than *ttl*."""
    return now - lease.renewed_at > ttl


def outranks(rank: datetime, run: str, lease: ProbeLease) -> bool:
    """*run* (scheduled at *rank*) is newer than the holder: a later slot, or the same
    slot and a greater run id (a total order, so two runs never both win)."""
    return (rank, run) > (lease.rank, lease.holder)


def holds(lease: ProbeLease | None, run: str) -> bool:
    """*run* holds the lease and has not released it."""
    return lease is not None and lease.holder == run and not lease.released


def predecessor_probing(lease: ProbeLease, now: datetime, ttl: timedelta) -> bool:
    """The run the holder took over from has not finished its last cycle and was alive
    within *ttl*: it may still be recording."""
    last = lease.previous_renewed_at
    return (
        lease.previous is not None
        and not lease.previous_released
        and last is not None
        and now - last <= ttl
    )


def claimed(
    lease: ProbeLease | None,
    run: str,
    rank: datetime,
    now: datetime,
    ttl: timedelta,
    name: str = LEASE_NAME,
) -> ProbeLease | None:
    """The lease after *run* (scheduled at *rank*) starts, or None to leave it as is."""
    fresh = ProbeLease(name=name, holder=run, rank=rank, taken_at=now, renewed_at=now)
    if lease is None:
        return fresh
    if holds(lease, run):
        return replace(lease, renewed_at=now)  # the same run again (a retry)
    holder_gone = lease.released or expired(lease, now, ttl)
    if not holder_gone and not outranks(rank, run, lease):
        return None
    if predecessor_probing(lease, now, ttl):
        # The holder never started recording: the run it was waiting for may still be
        # probing, so wait for that one.
        return replace(
            fresh, previous=lease.previous, previous_renewed_at=lease.previous_renewed_at
        )
    if holder_gone:
        return fresh
    return replace(fresh, previous=lease.holder, previous_renewed_at=lease.renewed_at)


def renewed(lease: ProbeLease | None, run: str, now: datetime) -> ProbeLease | None:
    """The lease renewed by its holder *run*; None (leave it) if *run* lost it."""
    if lease is None or not holds(lease, run):
        return None
    return replace(lease, renewed_at=now)


def released(lease: ProbeLease | None, run: str, now: datetime) -> ProbeLease | None:
    """The lease after *run* stopped: released if it held it, ``previous_released`` if
    it was the run being taken over from; None if *run* is neither."""
    if lease is None:
        return None
    if lease.holder == run and not lease.released:
        return replace(lease, released=True, renewed_at=now)
    if lease.previous == run and not lease.previous_released:
        return replace(lease, previous_released=True)
    return None


def handover(lease: ProbeLease | None, run: str, now: datetime, ttl: timedelta) -> Handover:
    """What *run* does after claiming (or renewing while it waits): probe, wait for the
    run it took over from (presumed dead once silent past *ttl*), or stand down."""
    if lease is None or not holds(lease, run):
        return Handover.STAND_DOWN
    return Handover.WAIT if predecessor_probing(lease, now, ttl) else Handover.PROBE
