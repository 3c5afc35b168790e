"""Drained marks against real databases: marked once, listed, cleared, checked input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ppo_dr.errors import PermanentError, UnsafeInputError
from ppo_dr.store import Store
from tests.ppo_dr.test_store import db_url, empty_store, store  # noqa: F401  (fixtures)

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def test_a_drain_mark_is_kept_listed_and_cleared(store: Store) -> None:  # noqa: F811
    first = store.mark_drained("app-jhb1-1", by="ops", reason="new disks", maintenance_id=7, at=T0)
    again = store.mark_drained("app-jhb1-1", by="someone else", reason="again")
    assert again == first
    assert (first.drained_by, first.reason, first.maintenance_id, first.drained_at) == (
        "ops",
        "new disks",
        7,
        T0,
    )
    store.mark_drained("app-cpt1-1", by="ops", flow_run_id="run-1")
    assert [d.server_id for d in store.drained_servers()] == ["app-cpt1-1", "app-jhb1-1"]
    assert store.clear_drained("app-jhb1-1") == first
    assert store.clear_drained("app-jhb1-1") is None
    assert [d.server_id for d in store.drained_servers()] == ["app-cpt1-1"]


def test_bad_drain_marks_change_nothing(store: Store) -> None:  # noqa: F811
    with pytest.raises(UnsafeInputError):
        store.mark_drained("../etc", by="ops")
    with pytest.raises(PermanentError, match="drained by"):
        store.mark_drained("app-jhb1-1", by="")
    with pytest.raises(PermanentError, match="maintenance id"):
        store.mark_drained("app-jhb1-1", by="ops", maintenance_id=True)  # type: ignore[arg-type]
    assert store.drained_servers() == []
