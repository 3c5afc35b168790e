"""The failover ledger against real databases (SQLite always, PostgreSQL when
``PPO_DR_TEST_POSTGRES_URL`` is set): idempotent steps, one row per plan, results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ppo_dr.errors import PermanentError, UnsafeInputError
from ppo_dr.store import Store
from ppo_dr.store.engine import head_revision
from tests.ppo_dr.test_store import db_url, empty_store, store  # noqa: F401  (fixtures)

T0 = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
PLAN = "0123456789abcdef"
PLAN_DOC = {"plan_id": PLAN, "mode": "emergency", "moves": [{"client_id": "acme"}]}


def test_the_ledger_is_at_head(store: Store) -> None:  # noqa: F811
    assert store.current_revision() == head_revision()


def test_begin_failover_is_found_again_by_plan_id(store: Store) -> None:  # noqa: F811
    first, created = store.begin_failover(
        PLAN,
        "emergency",
        PLAN_DOC,
        placement_versions={"acme": 3},
        declared_at=T0,
        flow_run_id="run-1",
        at=T0 + timedelta(seconds=5),
    )
    assert created
    assert (first.state, first.declared_at, first.placement_versions) == (
        "running",
        T0,
        {"acme": 3},
    )
    store.finish_failover(PLAN, "failed", "crashed", at=T0 + timedelta(minutes=1))
    # The rerun: same plan, other run id and versions; the first run's facts stand.
    again, created = store.begin_failover(
        PLAN,
        "emergency",
        PLAN_DOC,
        placement_versions={"acme": 4},
        flow_run_id="run-2",
        at=T0 + timedelta(minutes=2),
    )
    assert not created
    assert again.state == "running" and again.finished_at is None
    assert again.placement_versions == {"acme": 3}
    assert again.declared_at == T0 and again.flow_run_id == "run-1"
    done = store.finish_failover(PLAN, "done", at=T0 + timedelta(minutes=3))
    assert done.state == "done" and done.finished_at == T0 + timedelta(minutes=3)
    assert [f.plan_id for f in store.failovers()] == [PLAN]


def test_a_plan_id_names_one_plan(store: Store) -> None:  # noqa: F811
    store.begin_failover(PLAN, "emergency", PLAN_DOC)
    with pytest.raises(PermanentError, match="another plan"):
        store.begin_failover(PLAN, "emergency", {**PLAN_DOC, "moves": []})
    with pytest.raises(PermanentError, match="another plan or mode"):
        store.begin_failover(PLAN, "planned", PLAN_DOC)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"plan_id": "short"}, "plan id"),
        ({"plan_id": "0123456789ABCDEF"}, "lowercase hex"),
        ({"plan_id": "../../etc/passwd00"}, "hex"),
        ({"mode": "yolo"}, "mode"),
        ({"plan": "not json"}, "not JSON"),
        ({"plan": "[1, 2]"}, "JSON object"),
        ({"placement_versions": {"acme": 0}}, "version"),
        ({"placement_versions": {"a;b": 1}}, "client id"),
        ({"incident_id": 42}, "no incident 42"),
        ({"incident_id": True}, "incident id"),
    ],
)
def test_bad_failover_input_is_refused_naming_it(
    store: Store,  # noqa: F811
    kwargs: dict[str, object],
    match: str,
) -> None:
    args: dict[str, object] = {"plan_id": PLAN, "mode": "emergency", "plan": PLAN_DOC}
    args.update(kwargs)
    with pytest.raises((PermanentError, UnsafeInputError), match=match):
        store.begin_failover(**args)  # type: ignore[arg-type]
    assert store.failovers() == []


def test_a_done_step_is_skipped_on_rerun(store: Store) -> None:  # noqa: F811
    store.begin_failover(PLAN, "emergency", PLAN_DOC)
    step = store.begin_step(PLAN, "acme", "restore", flow_run_id="run-1", at=T0)
    assert (step.state, step.attempts, step.done) == ("running", 1, False)
    # Crash: the step stays running; the rerun begins it again (attempt 2).
    step = store.begin_step(PLAN, "acme", "restore", flow_run_id="run-2", at=T0)
    assert (step.state, step.attempts, step.flow_run_id) == ("running", 2, "run-2")
    finished = store.finish_step(PLAN, "acme", "restore", data={"bytes": 10}, at=T0)
    assert finished.done and finished.data == {"bytes": 10}
    # Done: a third run gets it back unchanged and skips it.
    again = store.begin_step(PLAN, "acme", "restore", flow_run_id="run-3")
    assert again.done and again.attempts == 2 and again.flow_run_id == "run-2"
    # A late "failed" from a duplicate cannot undo a done step; a rollback can.
    assert store.finish_step(PLAN, "acme", "restore", "failed").state == "done"
    assert store.finish_step(PLAN, "acme", "restore", "rolled-back").state == "rolled-back"
    assert store.begin_step(PLAN, "acme", "restore").attempts == 3
    store.begin_step(PLAN, "acme", "verify")
    store.begin_step(PLAN, "other", "restore")
    assert [(s.client_id, s.step) for s in store.failover_steps(PLAN)] == [
        ("acme", "restore"),
        ("acme", "verify"),
        ("other", "restore"),
    ]
    assert [s.step for s in store.failover_steps(PLAN, "acme")] == ["restore", "verify"]


def test_steps_need_their_failover_and_valid_names(store: Store) -> None:  # noqa: F811
    with pytest.raises(PermanentError, match="begin_failover first"):
        store.begin_step(PLAN, "acme", "restore")
    store.begin_failover(PLAN, "emergency", PLAN_DOC)
    with pytest.raises(UnsafeInputError, match="step name"):
        store.begin_step(PLAN, "acme", "rm -rf")
    with pytest.raises(UnsafeInputError, match="client id"):
        store.begin_step(PLAN, "../x", "restore")
    with pytest.raises(PermanentError, match="never began"):
        store.finish_step(PLAN, "acme", "restore")
    store.begin_step(PLAN, "acme", "restore")
    with pytest.raises(PermanentError, match="step end state"):
        store.finish_step(PLAN, "acme", "restore", "running")


def test_results_accumulate_what_each_step_measured(store: Store) -> None:  # noqa: F811
    store.begin_failover(PLAN, "emergency", PLAN_DOC)
    common: dict[str, Any] = {"from_server": "app-1", "to_server": "app-2"}
    store.record_failover_result(
        PLAN,
        "acme",
        **common,
        outcome="running",
        source_mirror="mirror-1",
        snapshot_id="2026-11-30T05-00-00Z",
        rpo_seconds=120.0,
        restored_bytes=1000,
        restored_files=3,
        restore_seconds=1.5,
    )
    result = store.record_failover_result(
        PLAN, "acme", **common, outcome="ok", rto_seconds=42.5, lost_writes=0
    )
    assert (result.outcome, result.rto_seconds, result.lost_writes) == ("ok", 42.5, 0)
    assert (result.rpo_seconds, result.restored_bytes, result.source_mirror) == (
        120.0,
        1000,
        "mirror-1",
    )
    assert [r.client_id for r in store.failover_results(PLAN)] == ["acme"]
    with pytest.raises(PermanentError, match="rto_seconds"):
        store.record_failover_result(PLAN, "acme", **common, outcome="ok", rto_seconds=-1)
    with pytest.raises(PermanentError, match="outcome"):
        store.record_failover_result(PLAN, "acme", **common, outcome="great")
    with pytest.raises(PermanentError, match="lost_writes"):
        store.record_failover_result(PLAN, "acme", **common, outcome="ok", lost_writes=-3)


def test_a_failover_links_to_its_incident(store: Store) -> None:  # noqa: F811
    incident, _ = store.open_incident("outage", "app-1", "app-1 down", {"server": "app-1"})
    store.begin_failover(PLAN, "emergency", PLAN_DOC, incident_id=incident.id)
    assert [f.plan_id for f in store.failovers(incident_id=incident.id)] == [PLAN]
    assert store.failovers(incident_id=incident.id + 1) == []
