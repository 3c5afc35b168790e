"""The probe lease's rules (pure): each rule by table, then every sequence of starts,
renewals, stops and clock steps of three overlapping runs, checked for the two promises
-- never two runs recording at once, and a successor never left waiting for ever."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from ppo_dr.probe.lease import (
    MIN_TTL,
    Handover,
    claimed,
    expired,
    handover,
    holds,
    lease_ttl,
    released,
    renewed,
    run_limit_s,
)
from ppo_dr.store import ProbeLease

T0 = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)
TTL = timedelta(seconds=10)
S = timedelta(seconds=1)


def lease(holder: str = "a", rank: datetime = T0, at: datetime = T0, **more: object) -> ProbeLease:
    return replace(
        ProbeLease("probe", holder, rank, taken_at=at, renewed_at=at),
        **more,  # type: ignore[arg-type]
    )


def test_ttl_and_run_limit() -> None:
    assert lease_ttl(2, 1) == MIN_TTL == timedelta(seconds=10)  # the lab's fast timings
    assert lease_ttl(10, 5) == timedelta(seconds=45)  # production's
    assert run_limit_s(120) == 360


def test_a_free_released_or_expired_lease_is_taken_with_nobody_to_wait_for() -> None:
    for current in (None, lease(released=True), lease(at=T0 - TTL - S)):
        new = claimed(current, "b", T0 + S, T0, TTL)
        assert new == ProbeLease("probe", "b", T0 + S, T0, T0)
        assert handover(new, "b", T0, TTL) is Handover.PROBE


def test_an_expired_newer_holder_is_taken_over_even_by_an_older_run() -> None:
    """A dead holder must not block probing, whatever its rank."""
    new = claimed(lease("c", rank=T0 + 9 * S, at=T0 - TTL - S), "a", T0, T0, TTL)
    assert new is not None and new.holder == "a" and new.previous is None


def test_a_newer_run_takes_over_a_live_holder_and_waits_for_it() -> None:
    new = claimed(lease("a", at=T0 - 3 * S), "b", T0 + S, T0, TTL)
    assert new is not None
    assert (new.holder, new.previous, new.previous_renewed_at) == ("b", "a", T0 - 3 * S)
    assert handover(new, "b", T0, TTL) is Handover.WAIT
    assert handover(new, "b", T0 - 3 * S + TTL, TTL) is Handover.WAIT
    assert handover(new, "b", T0 - 3 * S + TTL + S, TTL) is Handover.PROBE  # presumed dead
    assert handover(replace(new, previous_released=True), "b", T0, TTL) is Handover.PROBE
    assert handover(new, "a", T0, TTL) is Handover.STAND_DOWN


def test_an_older_run_leaves_a_live_newer_holder_alone_and_stands_down() -> None:
    current = lease("b", rank=T0 + S)
    assert claimed(current, "a", T0, T0, TTL) is None
    assert handover(current, "a", T0, TTL) is Handover.STAND_DOWN


def test_the_same_slot_is_ordered_by_run_id() -> None:
    assert claimed(lease("b"), "a", T0, T0, TTL) is None
    taken = claimed(lease("a"), "b", T0, T0, TTL)
    assert taken is not None and taken.previous == "a"


def test_a_retry_of_the_holder_renews_and_keeps_its_wait() -> None:
    current = lease("b", rank=T0, previous="a", previous_renewed_at=T0)
    again = claimed(current, "b", T0, T0 + S, TTL)
    assert again == replace(current, renewed_at=T0 + S)


def test_taking_over_a_run_that_still_waits_waits_for_the_run_that_probes() -> None:
    waiting = lease("b", rank=T0 + S, previous="a", previous_renewed_at=T0 - S)
    new = claimed(waiting, "c", T0 + 2 * S, T0, TTL)
    assert new is not None and (new.previous, new.previous_renewed_at) == ("a", T0 - S)
    done = replace(waiting, previous_released=True)
    new = claimed(done, "c", T0 + 2 * S, T0, TTL)
    assert new is not None and (new.previous, new.previous_renewed_at) == ("b", T0)


def test_a_successor_that_stops_while_waiting_passes_the_wait_on() -> None:
    """b took over from a (still probing) and stopped before recording; c must still
    wait for a (found by the sequence test below: c used to probe at once beside a)."""
    waiting = lease("b", rank=T0 + S, previous="a", previous_renewed_at=T0)
    gone = released(waiting, "b", T0 + S)
    assert gone is not None and gone.released
    new = claimed(gone, "c", T0 + 2 * S, T0 + 2 * S, TTL)
    assert new is not None and (new.holder, new.previous) == ("c", "a")
    assert handover(new, "c", T0 + 2 * S, TTL) is Handover.WAIT
    later = claimed(gone, "c", T0 + 2 * S, T0 + TTL + S, TTL)
    assert later is not None and later.previous is None  # a silent past the TTL


def test_renewal_only_by_the_holder_that_has_not_released() -> None:
    assert renewed(lease("a"), "a", T0 + S) == lease("a", renewed_at=T0 + S)
    assert renewed(lease("a"), "b", T0 + S) is None
    assert renewed(lease("a", released=True), "a", T0 + S) is None
    assert renewed(None, "a", T0) is None


def test_release_by_the_holder_or_by_the_run_taken_over_from() -> None:
    taken = lease("b", previous="a", previous_renewed_at=T0)
    assert released(taken, "b", T0 + S) == replace(taken, released=True, renewed_at=T0 + S)
    assert released(taken, "a", T0 + S) == replace(taken, previous_released=True)
    assert released(taken, "c", T0 + S) is None
    assert released(replace(taken, previous_released=True), "a", T0 + S) is None
    assert released(lease("b", released=True), "b", T0 + S) is None
    assert released(None, "a", T0) is None


def test_expiry_and_holding() -> None:
    assert not expired(lease(), T0 + TTL, TTL)
    assert expired(lease(), T0 + TTL + S, TTL)
    assert holds(lease("a"), "a")
    assert not holds(lease("a", released=True), "a")
    assert not holds(lease("a"), "b")
    assert not holds(None, "a")


# -- every sequence of events of three runs -----------------------------------------------

RUNS = {"a": T0, "b": T0 + 60 * S, "c": T0 + 120 * S}  # run -> its schedule slot
EVENTS = [
    *((kind, run) for kind in ("start", "cycle", "stop") for run in RUNS),
    ("tick", ""),
    ("tick-past-ttl", ""),
]


@dataclass
class Fleet:
    """The lease and what each run believes, driven as the flow drives its keeper."""

    now: datetime = T0
    lease: ProbeLease | None = None
    started: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    recorded: dict[str, datetime] = field(default_factory=dict)  # run -> last cycle it recorded

    def step(self, kind: str, run: str) -> None:
        if kind == "tick":
            self.now += S
        elif kind == "tick-past-ttl":
            self.now += TTL + S
        elif kind == "start" and run not in self.started:
            self.started.add(run)
            self.lease = claimed(self.lease, run, RUNS[run], self.now, TTL) or self.lease
            self._decided(run, handover(self.lease, run, self.now, TTL))
        elif kind == "cycle" and run in self.started - self.done:
            self.lease = renewed(self.lease, run, self.now) or self.lease
            self._decided(run, handover(self.lease, run, self.now, TTL))
        elif kind == "stop" and run in self.started - self.done:
            self._stop(run)

    def _decided(self, run: str, what: Handover) -> None:
        if what is Handover.STAND_DOWN:
            self._stop(run)
        elif what is Handover.PROBE:
            for other, at in self.recorded.items():
                # Nobody else records unless it stopped, or went silent past the TTL.
                assert other == run or other in self.done or self.now - at > TTL, (
                    run,
                    other,
                    self.lease,
                )
            self.recorded[run] = self.now

    def _stop(self, run: str) -> None:
        self.lease = released(self.lease, run, self.now) or self.lease
        self.done.add(run)


@pytest.mark.parametrize("first", EVENTS, ids=lambda e: "-".join(filter(None, e)))
def test_no_two_runs_ever_record_at_once(first: tuple[str, str]) -> None:
    """Every sequence of five events (11^5 of them, split by the first): at a PROBE
    decision, every other run that recorded has stopped or been silent past the TTL."""
    for rest in itertools.product(EVENTS, repeat=4):
        fleet = Fleet()
        for kind, run in (first, *rest):
            fleet.step(kind, run)


def test_a_waiting_successor_probes_once_its_predecessor_stops_or_goes_silent() -> None:
    for stop_old in (True, False):
        fleet = Fleet()
        for event in (("start", "a"), ("cycle", "a"), ("tick", ""), ("start", "b")):
            fleet.step(*event)
        assert handover(fleet.lease, "b", fleet.now, TTL) is Handover.WAIT
        fleet.step("cycle", "a")  # a sees it lost the lease: stops, releases
        assert "a" in fleet.done
        if not stop_old:  # a killed instead: nobody releases
            fleet = replace(fleet, lease=replace(fleet.lease, previous_released=False))
            fleet.step("tick-past-ttl", "")
        assert handover(fleet.lease, "b", fleet.now, TTL) is Handover.PROBE
