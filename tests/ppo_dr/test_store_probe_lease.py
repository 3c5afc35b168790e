"""The probe lease against real databases: the hand-over as the flow drives it, two
runs claiming at once (one wins), and bad changes refused with nothing changed."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ppo_dr.errors import PermanentError, UnsafeInputError
from ppo_dr.probe.handover import LeaseKeeper
from ppo_dr.probe.lease import LEASE_NAME, Handover
from ppo_dr.store import ProbeLease, Store
from tests.ppo_dr.test_store import db_url, empty_store, store  # noqa: F401  (fixtures)

T0 = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)
S = timedelta(seconds=1)
TTL = timedelta(seconds=10)


def keeper(db: Store, run: str, slot: int) -> LeaseKeeper:
    return LeaseKeeper(db, run, T0 + slot * 120 * S, TTL)


def test_a_hand_over_as_the_flow_drives_it(store: Store) -> None:  # noqa: F811
    old, new = keeper(store, "run-old", 0), keeper(store, "run-new", 1)
    assert store.probe_lease(LEASE_NAME) is None
    assert old.claim(T0) is Handover.PROBE
    assert old.renew(T0 + 2 * S) is Handover.PROBE
    assert new.claim(T0 + 3 * S) is Handover.WAIT  # old is mid-period
    assert new.renew(T0 + 4 * S) is Handover.WAIT
    assert old.renew(T0 + 4 * S) is Handover.STAND_DOWN  # its next cycle: lost it
    assert old.successor == "run-new"
    old.release(T0 + 4 * S)
    assert new.renew(T0 + 5 * S) is Handover.PROBE
    stored = store.probe_lease(LEASE_NAME)
    assert stored == ProbeLease(
        LEASE_NAME,
        "run-new",
        T0 + 120 * S,
        taken_at=T0 + 3 * S,
        renewed_at=T0 + 5 * S,
        previous="run-old",
        previous_renewed_at=T0 + 2 * S,
        previous_released=True,
    )
    late = keeper(store, "run-older", 0)  # an earlier slot that started even later
    assert late.claim(T0 + 6 * S) is Handover.STAND_DOWN
    assert store.probe_lease(LEASE_NAME) == stored  # left alone
    new.release(T0 + 7 * S)
    assert late.claim(T0 + 8 * S) is Handover.PROBE  # released: taken at once


def test_a_killed_holder_is_taken_over_once_silent(store: Store) -> None:  # noqa: F811
    assert keeper(store, "run-killed", 0).claim(T0) is Handover.PROBE
    assert keeper(store, "run-next", 1).claim(T0 + TTL + S) is Handover.PROBE


def test_two_runs_claiming_at_once_one_records(store: Store) -> None:  # noqa: F811
    """Both of the same slot, claiming in parallel threads: the lock serialises them.
    The greater id ends up holding the lease whichever came first; if it came second it
    waits for the first, which would stand down at its next cycle."""
    barrier = threading.Barrier(2)
    outcome: dict[str, Handover] = {}

    def start(run: str) -> None:
        barrier.wait(timeout=30)
        outcome[run] = keeper(store, run, 0).claim(T0)

    threads = [threading.Thread(target=start, args=(r,)) for r in ("run-a", "run-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert outcome in (
        {"run-a": Handover.PROBE, "run-b": Handover.WAIT},
        {"run-a": Handover.STAND_DOWN, "run-b": Handover.PROBE},
    )
    lease = store.probe_lease(LEASE_NAME)
    assert lease is not None and lease.holder == "run-b"


def test_bad_lease_changes_change_nothing(store: Store) -> None:  # noqa: F811
    keeper(store, "run-a", 0).claim(T0)
    before = store.probe_lease(LEASE_NAME)
    assert before is not None
    with pytest.raises(UnsafeInputError):
        store.change_probe_lease("../probe", lambda lease: lease)
    with pytest.raises(PermanentError, match="renamed"):
        store.change_probe_lease(LEASE_NAME, lambda lease: replace(before, name="other"))
    with pytest.raises(PermanentError, match="no time zone"):
        store.change_probe_lease(
            LEASE_NAME, lambda lease: replace(before, renewed_at=datetime(2026, 12, 4))
        )
    with pytest.raises(PermanentError, match="lease holder"):
        store.change_probe_lease(LEASE_NAME, lambda lease: replace(before, holder="x" * 101))
    assert store.probe_lease(LEASE_NAME) == before


def test_a_run_taken_over_while_it_waits_releases_its_waiter(store: Store) -> None:  # noqa: F811
    """a probes; b takes over and waits; a stops; c takes over from b before b probed.
    b stands down and releases (as the flow does), so c probes without waiting."""
    a, b, c = (keeper(store, run, slot) for slot, run in enumerate(("run-a", "run-b", "run-c")))
    assert a.claim(T0) is Handover.PROBE
    assert b.claim(T0 + S) is Handover.WAIT
    assert a.renew(T0 + 2 * S) is Handover.STAND_DOWN
    a.release(T0 + 2 * S)
    assert c.claim(T0 + 2 * S) is Handover.WAIT  # b might be about to record
    assert b.renew(T0 + 3 * S) is Handover.STAND_DOWN
    b.release(T0 + 3 * S)
    assert c.renew(T0 + 3 * S) is Handover.PROBE
