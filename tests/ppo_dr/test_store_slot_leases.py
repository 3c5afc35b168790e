"""The store's record of concurrency-slot leases, on SQLite and PostgreSQL: recorded,
listed per limit oldest first, forgotten, and bad records refused with nothing kept."""

from __future__ import annotations

import pytest

from ppo_dr.errors import PermanentError
from ppo_dr.slot_holders import Holder, RecordedLease
from ppo_dr.store import Store
from tests.ppo_dr.test_store import db_url, empty_store, store  # noqa: F401  (fixtures)

LIMIT = "mirror-server-app-jhb1-1"


def lease(lease_id: str, limit: str = LIMIT, run: str = "run-1") -> RecordedLease:
    return RecordedLease(lease_id, limit, Holder(run, "token"))


def test_leases_are_recorded_per_limit_and_forgotten(store: Store) -> None:  # noqa: F811
    assert store.slot_leases(LIMIT) == []
    first, second = lease("11111111-0000-0000-0000-000000000001"), lease("2" * 8, run="run-2")
    other = lease("3" * 8, limit="mirror-dc-jhb1")
    for recorded in (first, second, other):
        store.record_slot_lease(recorded)
    assert store.slot_leases(LIMIT) == [first, second]
    assert store.slot_leases("mirror-dc-jhb1") == [other]
    store.record_slot_lease(first)  # recorded again (a retried write): still one row
    assert store.slot_leases(LIMIT) == [first, second]
    store.forget_slot_lease(first.lease_id)
    store.forget_slot_lease(first.lease_id)  # already gone: fine
    assert store.slot_leases(LIMIT) == [second]


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        (lease("x" * 37), "lease id is 37 characters long"),
        (lease("l1", limit=""), "limit name must not be empty"),
        (lease("l1", limit="a" * 101), "limit name is 101 characters long"),
        (RecordedLease("l1", LIMIT, Holder("run\x00", "t")), "holder run must not contain a NUL"),
        (RecordedLease("l1", LIMIT, Holder("run", "")), "holder token must not be empty"),
    ],
)
def test_a_bad_record_is_refused_and_nothing_kept(
    store: Store,  # noqa: F811
    bad: RecordedLease,
    rule: str,
) -> None:
    with pytest.raises(PermanentError, match=rule):
        store.record_slot_lease(bad)
    assert store.slot_leases(bad.limit) == [] if bad.limit else True
    assert store.slot_leases(LIMIT) == []
