"""The dead-holder rule of concurrency-slot leases (``ppo_dr.slot_holders``), every
case: each state a holder's run can be in, against an asker of the same run or not,
of the same process or not, or none."""

from __future__ import annotations

import pytest

from ppo_dr.slot_holders import ENDED_STATES, Holder, RecordedLease, dead_leases

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
