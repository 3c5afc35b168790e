"""The outage state machine: observations in, transitions out; pure, no clock, no I/O.

Per target::

    up ──fail──► pending ──fail, failing continuously ≥ threshold──► down
     ▲              │                                                 │
     └───success────┘                                              success
     ▲                                                                ▼
     └──── recovery_successes successes in a row ───────────── recovering
                                             (a failure here: back to down, same outage)

Why these rules: a blip never pages (``down`` needs *continuous* failure for the whole
threshold, and any success in between starts over), and a service that answers once
between failures is not declared healthy (recovery needs a run of successes). A
failure while recovering does not start a new outage: the first-failure time of the
outage is kept, so the incident and its timeline stay one.

"Continuous" also means the probe was looking: if two observations are further apart
than ``max_gap`` (the probe was stopped or starved), a failure after the gap starts a
new failure run instead of being counted as failing all along. The gap is measured
against the probe's own cadence (:func:`cadence_gap`): a probe on a loaded machine
whose every cycle takes longer than its interval is still looking, and must not have
its failure runs restarted each cycle (found at 40 clients under load 20-39: four
server incidents first and the DC's 4 minutes later), while a probe that stalls makes
one gap far longer than its recent cycles.

Time comes only from the observations, so the same observations always give the same
transitions, whether live or replayed in a test.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ppo_dr.inventory import Timing


@dataclass(frozen=True, slots=True)
class Observation:
    """What one check of one target saw, from one vantage, at one time (UTC).

    Defined here, not beside the checks, so the pure half of the probe never imports
    aiohttp: replays and tests build observations by hand.
    """

    target_id: str
    ok: bool
    latency_ms: float
    reason: str
    at: datetime
    vantage: str = "default"


class TargetState(StrEnum):
    UP = "up"
    PENDING = "pending"
    DOWN = "down"
    RECOVERING = "recovering"

    @property
    def in_outage(self) -> bool:
        """Down or recovering: an outage was declared and has not ended."""
        return self in (TargetState.DOWN, TargetState.RECOVERING)


@dataclass(frozen=True, slots=True)
class OutagePolicy:
    """When failures make an outage and successes end it (from ``fleet.timing``)."""

    threshold: timedelta
    recovery_successes: int = 3
    max_gap: timedelta | None = None

    def __post_init__(self) -> None:
        if self.threshold <= timedelta(0):
            raise ValueError("the outage threshold must be positive")
        if self.recovery_successes < 1:
            raise ValueError("recovery_successes must be at least 1")

    @classmethod
    def from_timing(cls, timing: Timing) -> OutagePolicy:
        """The fleet's policy; a gap of three probe intervals breaks a failure run."""
        return cls(
            threshold=timedelta(seconds=timing.outage_threshold),
            recovery_successes=timing.recovery_successes,
            max_gap=timedelta(seconds=3 * timing.probe_interval),
        )


#: Recent cycle periods a gap must exceed (their median) to mean "not looking".
GAP_CYCLES = 3


def cadence_gap(policy: OutagePolicy, recent_periods: Sequence[timedelta]) -> timedelta | None:
    """The gap that breaks a failure run in the next cycle: the policy's (three probe
    intervals), or :data:`GAP_CYCLES` times the median of the probe's recent cycle
    periods (start to start), whichever is longer.

    The median, not the newest: a stall makes the current period long, which is the gap
    to catch; only a run of slow cycles (a loaded machine) stretches the allowance.
    """
    if policy.max_gap is None or not recent_periods:
        return policy.max_gap
    typical = sorted(recent_periods)[len(recent_periods) // 2]
    return max(policy.max_gap, GAP_CYCLES * typical)


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """What the state machine remembers about one target between observations.

    ``first_failure_at``: start of the current failure run while pending; start of
    the outage while down or recovering; None while up. ``successes`` counts the run
    of successes while recovering. ``last_at`` is the newest observation seen (older
    ones arriving late are ignored).
    """

    target_id: str
    state: TargetState = TargetState.UP
    since: datetime | None = None
    first_failure_at: datetime | None = None
    successes: int = 0
    last_at: datetime | None = None
    last_reason: str = ""


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state, as a value the probe flow persists (store: probe transitions)."""

    target_id: str
    from_state: TargetState
    to_state: TargetState
    at: datetime
    reason: str
    first_failure_at: datetime | None


def observe(
    status: TargetStatus, ok: bool, at: datetime, reason: str, policy: OutagePolicy
) -> tuple[TargetStatus, list[Transition]]:
    """Apply one observation of *status*'s target; return the new status and transitions.

    Observations older than the newest one seen are ignored (no transitions).
    """
    if status.last_at is not None and at < status.last_at:
        return status, []
    gap = (
        policy.max_gap is not None
        and status.last_at is not None
        and at - status.last_at > policy.max_gap
    )
    seen = replace(status, last_at=at, last_reason=reason if not ok else status.last_reason)
    moves: list[Transition] = []

    def move(current: TargetStatus, to: TargetState, why: str, **changes: object) -> TargetStatus:
        new = replace(current, state=to, since=at, **changes)  # type: ignore[arg-type]
        # Back up: name the failure run or outage that just ended, not None.
        first = current.first_failure_at if to is TargetState.UP else new.first_failure_at
        moves.append(Transition(status.target_id, current.state, to, at, why, first))
        return new

    state = status.state
    if state is TargetState.UP:
        if ok:
            return seen, []
        seen = move(seen, TargetState.PENDING, reason, first_failure_at=at, successes=0)
        return seen, moves

    if state is TargetState.PENDING:
        if ok:
            seen = move(seen, TargetState.UP, "answered again", first_failure_at=None)
            return seen, moves
        first = status.first_failure_at or at
        if gap:  # the probe was not looking: continuity unknown, start the run again
            return replace(seen, first_failure_at=at), []
        if at - first >= policy.threshold:
            failing_for = int((at - first).total_seconds())
            seen = move(
                seen,
                TargetState.DOWN,
                f"failing continuously for {failing_for} s: {reason}",
                first_failure_at=first,
            )
        return seen, moves

    if state is TargetState.DOWN:
        if not ok:
            return seen, []
        seen = move(seen, TargetState.RECOVERING, "answered again", successes=1)
        if policy.recovery_successes <= 1:
            seen = move(seen, TargetState.UP, "recovered: 1 success", first_failure_at=None)
            seen = replace(seen, successes=0)
        return seen, moves

    # RECOVERING
    if not ok:
        seen = move(seen, TargetState.DOWN, f"failed again while recovering: {reason}", successes=0)
        return seen, moves
    successes = status.successes + 1
    if successes >= policy.recovery_successes:
        seen = move(
            seen,
            TargetState.UP,
            f"recovered: {successes} successes in a row",
            first_failure_at=None,
            successes=0,
        )
        return seen, moves
    return replace(seen, successes=successes), []


def replay(
    target_id: str,
    observations: Iterable[tuple[datetime, bool]],
    policy: OutagePolicy,
    start: TargetStatus | None = None,
) -> tuple[TargetStatus, list[Transition]]:
    """Feed (at, ok) pairs in order; the final status and every transition (for tests, replays)."""
    status = start or TargetStatus(target_id)
    out: list[Transition] = []
    for at, ok in observations:
        status, moves = observe(status, ok, at, "ok" if ok else "failed", policy)
        out.extend(moves)
    return status, out


class OutageTracker:
    """The statuses of many targets; feed it each cycle's observations.

    Pure bookkeeping around :func:`observe` (no clock, no I/O). A restarted probe can
    seed it with ``statuses`` rebuilt from the store, so an outage in progress keeps
    its first-failure time and its incident key.
    """

    def __init__(
        self, policy: OutagePolicy, statuses: Mapping[str, TargetStatus] | None = None
    ) -> None:
        self.policy = policy
        self._statuses: dict[str, TargetStatus] = dict(statuses or {})

    @property
    def statuses(self) -> Mapping[str, TargetStatus]:
        return dict(self._statuses)

    def status(self, target_id: str) -> TargetStatus:
        return self._statuses.get(target_id) or TargetStatus(target_id)

    def forget(self, target_ids: Iterable[str]) -> list[str]:
        """Drop the statuses of *target_ids* (targets no longer in the fleet: a released
        scratch server is not "down"); the ones that were known, sorted."""
        gone = sorted(t for t in set(target_ids) if t in self._statuses)
        for target_id in gone:
            del self._statuses[target_id]
        return gone

    def feed(
        self, observations: Iterable[Observation], *, max_gap: timedelta | None = None
    ) -> list[Transition]:
        """Apply observations (any order within a cycle is fine: time decides); with
        *max_gap* (:func:`cadence_gap`) in place of the policy's for this cycle."""
        policy = self.policy if max_gap is None else replace(self.policy, max_gap=max_gap)
        out: list[Transition] = []
        for obs in sorted(observations, key=lambda o: o.at):
            status, moves = observe(self.status(obs.target_id), obs.ok, obs.at, obs.reason, policy)
            self._statuses[obs.target_id] = status
            out.extend(moves)
        return out


# --------------------------------------------------------------------------- quorum


def quorum_observation(
    target_id: str,
    latest: Mapping[str, Observation],
    at: datetime,
    *,
    vantages: Sequence[str],
    freshness: timedelta,
) -> Observation:
    """Combine several vantages' latest observations of one target into one.

    The target is failing at *at* only if a strict majority of *all* configured
    vantages have a fresh (``at - freshness`` or newer) failing observation. A vantage
    with nothing fresh does not count as failing: a probe that lost its own network
    must not declare the whole fleet down (its silence is the heartbeat watchdog's
    business, not an outage).
    """
    if not vantages:
        raise ValueError("quorum needs at least one vantage")
    fresh = {v: o for v, o in latest.items() if v in vantages and at - freshness <= o.at <= at}
    failing = sorted(v for v, o in fresh.items() if not o.ok)
    ok = not (2 * len(failing) > len(vantages))
    latencies = sorted(o.latency_ms for o in fresh.values())
    latency = latencies[len(latencies) // 2] if latencies else 0.0
    if failing:
        detail = "; ".join(f"{v}: {fresh[v].reason}" for v in failing)
        reason = f"{len(failing)}/{len(vantages)} vantages failing: {detail}"
    else:
        reason = f"ok from {len(fresh)}/{len(vantages)} vantages"
    return Observation(target_id, ok, latency, reason, at, vantage="quorum")
