"""Request counts against real databases: added per client and minute, peak per window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ppo_dr.errors import PermanentError, UnsafeInputError
from ppo_dr.store import Store
from tests.ppo_dr.test_store import db_url, empty_store, store  # noqa: F401  (fixtures)

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def test_counts_add_up_per_minute_and_the_peak_minute_of_the_window_counts(
    store: Store,  # noqa: F811
) -> None:
    assert store.peak_rpm(T0) == {}
    store.count_requests(T0 + timedelta(seconds=59), {"acme-mining": 40, "karoo": 5})
    store.count_requests(T0, {"acme-mining": 20})  # a second front door, same minute
    store.count_requests(T0 + timedelta(minutes=1), {"acme-mining": 30, "karoo": 9})
    store.count_requests(T0 - timedelta(minutes=5), {"karoo": 500})  # before the window
    assert store.peak_rpm(T0) == {"acme-mining": 60, "karoo": 9}
    assert store.peak_rpm(T0 - timedelta(hours=1)) == {"acme-mining": 60, "karoo": 500}
    assert store.count_requests(T0, {}) == 0


def test_bad_counts_change_nothing(store: Store) -> None:  # noqa: F811
    with pytest.raises(UnsafeInputError):
        store.count_requests(T0, {"ok-client": 1, "../etc": 1})
    with pytest.raises(PermanentError, match="requests"):
        store.count_requests(T0, {"ok-client": 1, "other": -1})
    with pytest.raises(PermanentError):
        store.count_requests(T0.replace(tzinfo=None), {"ok-client": 1})
    assert store.peak_rpm(T0 - timedelta(days=1)) == {}
