"""Pools without a worker: the pure verdict for every case, and the non-paging incident
it opens and recovers in a real SQLite store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ppo_dr.probe.pools import (
    UNATTENDED_KIND,
    PoolWorkers,
    Unattended,
    record_pool_attendance,
    unattended_pools,
)
from ppo_dr.store import Store

T0 = datetime(2026, 12, 4, 8, 0, 0, tzinfo=UTC)
THRESHOLD = timedelta(seconds=20)
S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        # A worker online: served, whatever its heartbeats say.
        (PoolWorkers("dc-jhb1", T0, online=1, last_heartbeats=(T0,)), None),
        # Offline, last heartbeat within the threshold: not yet.
        (PoolWorkers("dc-jhb1", T0, last_heartbeats=(T0 + 40 * S,)), None),
        # Exactly at the threshold: not yet; one second more: unattended.
        (PoolWorkers("dc-jhb1", T0, last_heartbeats=(T0 + 30 * S,)), None),
        (
            PoolWorkers("dc-jhb1", T0, last_heartbeats=(T0 + 29 * S, T0 + 10 * S)),
            Unattended("dc-jhb1", T0 + 29 * S, True),
        ),
        # Never a worker: counted from the pool's creation.
        (PoolWorkers("dc-cpt1", T0 + 31 * S), None),
        (PoolWorkers("dc-cpt1", T0 + 29 * S), Unattended("dc-cpt1", T0 + 29 * S, False)),
        # Paused by an operator: never reported.
        (PoolWorkers("dc-lon1", T0, paused=True), None),
    ],
)
def test_a_pool_is_unattended_only_past_the_threshold(
    pool: PoolWorkers, expected: Unattended | None
) -> None:
    assert unattended_pools([pool], T0 + 50 * S, THRESHOLD) == ([expected] if expected else [])


def test_verdicts_come_by_pool_name_and_say_what_is_not_running() -> None:
    pools = [PoolWorkers("dc-lon1", T0), PoolWorkers("control", T0), PoolWorkers("dc-jhb1", T0)]
    found = unattended_pools(pools, T0 + timedelta(minutes=5), THRESHOLD)
    assert [u.pool for u in found] == ["control", "dc-jhb1", "dc-lon1"]
    assert found[1].title == (
        "no worker on pool dc-jhb1 since 2026-12-04T08:00:00Z: "
        "nobody is running data centre jhb1's mirrors"
    )
    assert found[0].consequence == "nobody is running the runs of pool control"


def test_an_unattended_pool_opens_one_non_paging_incident_until_a_worker_returns(
    store: Store,
) -> None:
    gone = PoolWorkers("dc-jhb1", T0, last_heartbeats=(T0,))
    served = PoolWorkers("dc-cpt1", T0, online=1, last_heartbeats=(T0 + 60 * S,))
    opened, recovered = record_pool_attendance(store, [gone, served], T0 + 60 * S, THRESHOLD)
    assert recovered == [] and [i.kind for i in opened] == [UNATTENDED_KIND]
    (incident,) = opened
    assert not incident.paging and incident.severity == "minor"
    assert incident.scope["subject"] == "dc-jhb1" and "jhb1's mirrors" in incident.title

    # Every later check finds it open: nothing new.
    again = record_pool_attendance(store, [gone, served], T0 + 90 * S, THRESHOLD)
    assert again == ([], [])
    assert len(store.incidents(kind=UNATTENDED_KIND)) == 1

    # A worker back: recovered, said on its timeline.
    back = PoolWorkers("dc-jhb1", T0, online=1, last_heartbeats=(T0 + 120 * S,))
    opened, recovered = record_pool_attendance(store, [back, served], T0 + 120 * S, THRESHOLD)
    assert opened == [] and [i.id for i in recovered] == [incident.id]
    assert recovered[0].state == "recovered"
    assert [e.kind for e in store.timeline(incident.id)][-1] == "pool-served"

    # Gone again before anyone resolved it: a new incident continues it.
    opened, _ = record_pool_attendance(store, [gone, served], T0 + 200 * S, THRESHOLD)
    assert len(opened) == 1 and opened[0].id != incident.id
    assert store.incident(incident.id).state == "resolved"  # type: ignore[union-attr]


def test_an_incident_of_a_pool_the_api_no_longer_has_is_left_alone(store: Store) -> None:
    gone = PoolWorkers("dc-old", T0)
    (incident,), _ = record_pool_attendance(store, [gone], T0 + 60 * S, THRESHOLD)
    assert record_pool_attendance(store, [], T0 + 90 * S, THRESHOLD) == ([], [])
    assert store.incident(incident.id).state == "open"  # type: ignore[union-attr]
