"""The dead-holder rule of concurrency-slot leases (``ppo_dr.slot_holders``), every
case: each state a holder's run can be in, against an asker of the same run or not,
of the same process or not, or none."""

from __future__ import annotations

import pytest

from ppo_dr.slot_holders import (
    ENDED_STATES,
    Holder,
    LeaseClock,
    OrphanWatch,
    RecordedLease,
    dead_leases,
    orphaned_slots,
)

RUN, OTHER = "run-a", "run-b"
ME = Holder(RUN, "token-now")
LIVE_STATES = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")


def lease(run: str, token: str, lease_id: str = "l1") -> RecordedLease:
    return RecordedLease(lease_id, "mirror-server-app-1", Holder(run, token))


@pytest.mark.parametrize("state", sorted(ENDED_STATES))
@pytest.mark.parametrize("asker", [ME, Holder(OTHER, "t"), None])
def test_a_holder_whose_run_ended_is_dead_whoever_asks(state: str, asker: Holder | None) -> None:
    held = lease(RUN, "token-then")
    assert dead_leases([held], {RUN: state}, asker) == [held]


@pytest.mark.parametrize("state", [*LIVE_STATES, None])
def test_a_live_or_unknown_run_of_someone_else_is_left_to_its_lease(state: str | None) -> None:
    held = lease(OTHER, "t")
    assert dead_leases([held], {OTHER: state}, ME) == []
    assert dead_leases([held], {}, ME) == []  # a run nobody could read
    assert dead_leases([held], {OTHER: state}, None) == []


@pytest.mark.parametrize("state", [*LIVE_STATES, None])
def test_an_earlier_attempt_of_the_askers_own_run_is_dead(state: str | None) -> None:
    """The failover rerun keeps its run id: the killed attempt's lease (another token)
    is dead even though the run is RUNNING again."""
    held = lease(RUN, "token-then")
    assert dead_leases([held], {RUN: state}, ME) == [held]


@pytest.mark.parametrize("state", [*LIVE_STATES, None])
def test_the_askers_own_process_is_never_dead_while_its_run_lives(state: str | None) -> None:
    """Another thread of this process holds a slot of the same limit (a DC's)."""
    held = lease(RUN, ME.token)
    assert dead_leases([held], {RUN: state}, ME) == []


def test_only_the_dead_are_returned_in_their_order() -> None:
    leases = [
        lease(OTHER, "t", "l1"),  # RUNNING elsewhere: alive
        lease("run-c", "t", "l2"),  # CRASHED: dead
        lease(RUN, ME.token, "l3"),  # this process: alive
        lease(RUN, "token-then", "l4"),  # an earlier attempt of this run: dead
        lease("run-d", "t", "l5"),  # COMPLETED without releasing: dead
    ]
    states = {OTHER: "RUNNING", "run-c": "CRASHED", RUN: "RUNNING", "run-d": "COMPLETED"}
    assert [x.lease_id for x in dead_leases(leases, states, ME)] == ["l2", "l4", "l5"]
    assert dead_leases([], states, ME) == []


@pytest.mark.parametrize(
    ("active", "limit", "recorded", "orphans"),
    [
        (1, 1, 0, 1),  # the one slot taken, nobody recorded: an orphan
        (1, 1, 1, 0),  # its holder recorded: alive or dead, not an orphan
        (2, 2, 1, 1),  # a DC's two slots, one recorded
        (2, 2, 0, 2),
        (0, 1, 0, 0),  # free: nothing to do
        (1, 2, 0, 0),  # not full: an orphan keeps nobody out yet
        (1, 1, 2, 0),  # more records than slots (a lease ran out): never negative
        (3, 2, 1, 2),  # over the limit (the limit was lowered): the excess counts
    ],
)
def test_orphaned_slots_are_those_of_a_full_limit_beyond_the_records(
    active: int, limit: int, recorded: int, orphans: int
) -> None:
    assert orphaned_slots(active, limit, recorded) == orphans


def test_an_orphan_is_given_back_only_once_seen_for_the_whole_stretch() -> None:
    watch = OrphanWatch(seen_s=20)
    assert not watch.watching
    assert watch.look(1, now=0) == 0  # first seen
    assert watch.watching
    assert watch.look(1, now=10) == 0
    assert watch.look(1, now=20) == 1  # seen for 20 s: give it back
    assert not watch.watching
    assert watch.look(1, now=30) == 0  # a give-back starts the stretch again
    assert watch.look(1, now=50) == 1


def test_a_look_without_orphans_starts_the_stretch_again() -> None:
    """A holder between its grant and its record is one look's orphan, not two's."""
    watch = OrphanWatch(seen_s=20)
    assert watch.look(1, now=0) == 0
    assert watch.look(0, now=10) == 0  # recorded meanwhile
    assert watch.look(1, now=20) == 0  # another one: a new stretch
    assert watch.look(1, now=35) == 0
    assert watch.look(1, now=40) == 1


def test_the_fewest_seen_over_the_stretch_are_given_back() -> None:
    watch = OrphanWatch(seen_s=20)
    assert watch.look(2, now=0) == 0
    assert watch.look(1, now=10) == 0  # one of the two was a live holder, recorded since
    assert watch.look(2, now=20) == 1  # another live one unrecorded: still only one


@pytest.mark.parametrize(
    ("renewed", "answered", "forgotten"),
    [
        (0, 5, True),  # gone right after a renewal: a restart forgot it
        (0, 49.9, True),
        (0, 50, False),  # near a lease since: it may have run out; never give back twice
        (0, 75, False),
        (40, 75, True),  # a later renewal moves the clock
    ],
)
def test_a_lease_gone_within_a_lease_of_its_renewal_was_forgotten(
    renewed: float, answered: float, forgotten: bool
) -> None:
    clock = LeaseClock(lease_s=60, renewed_at=0, margin_s=10)
    clock.renewed(renewed)
    assert clock.gone(answered) is forgotten
    assert clock.forgotten is forgotten


def test_forgotten_stays_forgotten_and_renewals_never_go_back() -> None:
    """A holder that found its lease forgotten keeps that verdict until it gives the
    slot back, however long it still holds it; an old renewal's answer arriving late
    does not move the clock back."""
    clock = LeaseClock(lease_s=60, renewed_at=100, margin_s=10)
    clock.renewed(90)
    assert clock.renewed_at == 100
    assert clock.gone(110) and clock.gone(1_000)
