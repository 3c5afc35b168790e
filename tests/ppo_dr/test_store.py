"""The state store against real databases: a fresh SQLite file always, PostgreSQL too
when ``PPO_DR_TEST_POSTGRES_URL`` names a server (a fresh database per test).

The races run two real processes (``spawn``) that meet at a barrier after reading, so
both act on the same version before either writes.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from ppo_dr.errors import (
    PermanentError,
    PlacementConflict,
    TransientError,
    UnsafeInputError,
    is_retryable,
)
from ppo_dr.store import Incident, Placement, Store
from ppo_dr.store.engine import VERSION_TABLE, head_revision, normalise_url
from ppo_dr.store.schema import Base

POSTGRES_URL = os.environ.get("PPO_DR_TEST_POSTGRES_URL")
T0 = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
HOSTILE_IDS = ["a;rm -rf /", "../x", "A B", "", "x" * 64, "-x", "a\x00b"]
RACE_ROUNDS = 4


# -- fixtures --------------------------------------------------------------------------


def _fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """Create a uniquely named database for one test and drop it afterwards."""
    admin = create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"ppo_dr_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'store.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL backend: set PPO_DR_TEST_POSTGRES_URL=postgresql://...")
    yield from _fresh_postgres_database(POSTGRES_URL)


@pytest.fixture
def empty_store(db_url: str) -> Iterator[Store]:
    """A store on an empty database (no schema)."""
    store = Store(db_url)
    yield store
    store.close()


@pytest.fixture
def store(empty_store: Store) -> Store:
    """A store at the head schema revision."""
    empty_store.upgrade()
    return empty_store


def _count_statements(store: Store) -> list[str]:
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(store.engine, "before_cursor_execute", record)
    return statements


# -- schema and lifecycle -------------------------------------------------------------


def test_upgrade_from_empty_then_idempotent(empty_store: Store) -> None:
    assert empty_store.current_revision() is None
    assert empty_store.upgrade() == head_revision()
    assert empty_store.current_revision() == head_revision()
    assert empty_store.seed_placements({"acme": "app-1"}) == 1
    assert empty_store.upgrade() == head_revision()  # again: nothing to do, nothing lost
    assert [p.client_id for p in empty_store.placements()] == ["acme"]


def test_migrations_match_schema_module(store: Store) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        assert compare_metadata(context, Base.metadata) == []


def _race_upgrader(url: str, barrier: Any, results: Any) -> None:
    with Store(url) as store:
        barrier.wait(timeout=60)
        results.put(store.upgrade())


def test_two_processes_upgrading_at_once(empty_store: Store, db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race_upgrader, args=(db_url, barrier, results)) for _ in "ab"]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    assert [results.get(timeout=5) for _ in procs] == [head_revision()] * 2
    assert empty_store.placements() == []


def test_store_without_schema_refuses_with_the_fix(empty_store: Store, db_url: str) -> None:
    calls: list[Callable[[], object]] = [
        empty_store.placements,
        lambda: empty_store.open_incident("outage", "k", "t", {}),
        lambda: empty_store.record_notice(
            "k", incident_id=None, step="s", channel="sms", recipient="r", subject="", body=""
        ),
        empty_store.active_maintenance,
    ]
    for call in calls:
        with pytest.raises(PermanentError, match=r"run `ppo-dr db upgrade`") as info:
            call()
        assert not is_retryable(info.value)
    # Only success is cached: once someone upgrades, the same instance works.
    with Store(db_url) as other:
        other.upgrade()
    assert empty_store.placements() == []


def test_store_newer_than_code_says_upgrade_ppo_dr(store: Store, db_url: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'ffff9999'"))  # noqa: S608
    with Store(db_url) as stale, pytest.raises(PermanentError, match="upgrade ppo-dr"):
        stale.placements()


def test_unreachable_postgres_is_transient() -> None:
    with Store("postgresql://nobody:secret@127.0.0.1:1/nothing") as store:
        with pytest.raises(TransientError) as info:
            store.current_revision()
        assert is_retryable(info.value)
        assert "secret" not in str(info.value)
        assert "***" in store.url


def test_patience_waits_for_a_refusing_postgres_then_fails_transiently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PPO_DR_STORE_PATIENCE_S", "1.2")
    with Store("postgresql://nobody@127.0.0.1:1/nothing") as store:
        started = time.monotonic()
        with pytest.raises(TransientError, match="unavailable or busy"):
            store.current_revision()
        assert 1.0 <= time.monotonic() - started < 10  # tried again, then gave up
    with Store("postgresql://nobody@127.0.0.1:1/nothing", patience_s=0) as store:
        started = time.monotonic()
        with pytest.raises(TransientError):
            store.current_revision()
        assert time.monotonic() - started < 1.0  # an operator's command fails at once


@pytest.mark.postgres
@pytest.mark.skipif(POSTGRES_URL is None, reason="set PPO_DR_TEST_POSTGRES_URL=postgresql://...")
def test_patience_does_not_wait_for_a_refusal_no_restart_changes() -> None:
    assert POSTGRES_URL is not None
    good = make_url(POSTGRES_URL)
    no_role = good.set(username="nobody-here", password="wrong")
    no_database = good.set(database="no_such_database")
    for url in (no_role, no_database):
        with Store(url.render_as_string(hide_password=False), patience_s=30) as store:
            started = time.monotonic()
            with pytest.raises(TransientError):
                store.current_revision()
            assert time.monotonic() - started < 5  # said no for good: not waited on


@pytest.mark.parametrize("value", ["soon", "-1", "7200"])
def test_a_bad_patience_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PPO_DR_STORE_PATIENCE_S", value)
    with pytest.raises(PermanentError, match=r"\$PPO_DR_STORE_PATIENCE_S=.*0 to 3600"):
        Store("sqlite://")


def test_url_normalisation() -> None:
    assert normalise_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(PermanentError, match="not a database URL"):
        normalise_url("just a path")
    with pytest.raises(PermanentError, match="only sqlite and postgresql"):
        normalise_url("mysql://u@h/db")


def test_open_defaults_to_sqlite_in_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PPO_DR_DB_URL", raising=False)
    with Store.open() as store:
        assert store.url == f"sqlite:///{tmp_path / 'home' / 'ppo-dr.db'}"
    monkeypatch.setenv("PPO_DR_DB_URL", f"sqlite:///{tmp_path / 'other.db'}")
    with Store.open() as store:
        assert store.url.endswith("other.db")


def test_sqlite_connections_are_set_up_for_sharing(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'x.db'}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


# -- placements -----------------------------------------------------------------------


def test_seed_placements_is_idempotent(store: Store) -> None:
    assert store.seed_placements({"acme": "app-1", "beta": "app-1"}, at=T0) == 2
    assert store.seed_placements({"acme": "app-9", "gamma": "app-2"}, at=T0) == 1
    assert store.seed_placements({}) == 0
    assert [(p.client_id, p.server_id, p.version) for p in store.placements()] == [
        ("acme", "app-1", 1),
        ("beta", "app-1", 1),
        ("gamma", "app-2", 1),
    ]
    (seed,) = store.placement_history("acme")
    assert (seed.from_server, seed.to_server, seed.version, seed.at) == (None, "app-1", 1, T0)


def test_move_client_compare_and_set(store: Store) -> None:
    store.seed_placements({"acme": "app-1"}, at=T0)
    moved = store.move_client(
        "acme", "app-2", 1, flow_run_id="run-1", reason="failover", at=T0 + timedelta(minutes=5)
    )
    assert moved == Placement("acme", "app-2", 2, T0 + timedelta(minutes=5), "run-1", "failover")
    assert store.placement("acme") == moved

    with pytest.raises(PlacementConflict) as info:
        store.move_client("acme", "app-3", 1, flow_run_id="run-2")
    assert (info.value.expected_version, info.value.actual_version) == (1, 2)
    assert not is_retryable(info.value)
    with pytest.raises(PlacementConflict) as missing:
        store.move_client("nobody", "app-3", 1)
    assert missing.value.actual_version is None

    # A retry of the committed move by the same run is not a conflict.
    assert store.move_client("acme", "app-2", 1, flow_run_id="run-1") == moved

    history = store.placement_history("acme")
    assert [(h.from_server, h.to_server, h.version, h.flow_run_id) for h in history] == [
        (None, "app-1", 1, None),
        ("app-1", "app-2", 2, "run-1"),
    ]
    assert history[1].reason == "failover"
    assert store.placement("nobody") is None


def _race_mover(url: str, client: str, target: str, barrier: Any, results: Any) -> None:
    store = Store(url)
    try:
        for _ in range(RACE_ROUNDS):
            seen = store.placement(client)
            assert seen is not None
            barrier.wait(timeout=60)  # both have read the same version
            try:
                moved = store.move_client(client, target, seen.version, flow_run_id=f"run-{target}")
                results.put((seen.version, "won", moved.version))
            except PlacementConflict as exc:
                results.put((seen.version, "conflict", exc.actual_version))
            barrier.wait(timeout=60)  # both are done before the next round reads
    except BaseException as exc:
        barrier.abort()
        results.put((0, "error", repr(exc)))
        raise
    finally:
        store.close()


def test_two_processes_moving_one_client_exactly_one_wins(store: Store, db_url: str) -> None:
    store.seed_placements({"acme": "app-1"})
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_race_mover, args=(db_url, "acme", target, barrier, results))
        for target in ("app-2", "app-3")
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in range(2 * RACE_ROUNDS)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0, outcomes
    for round_ in range(1, RACE_ROUNDS + 1):
        this_round = sorted(o for o in outcomes if o[0] == round_)
        assert this_round == [(round_, "conflict", round_ + 1), (round_, "won", round_ + 1)]
    final = store.placement("acme")
    assert final is not None and final.version == RACE_ROUNDS + 1
    history = store.placement_history("acme")
    assert [m.version for m in history] == list(range(1, RACE_ROUNDS + 2))  # one move a round
    for before, move in itertools.pairwise(history):
        assert move.from_server == before.to_server  # each move starts where the last ended
    assert final.server_id == history[-1].to_server


def test_hostile_ids_are_refused_before_any_sql(empty_store: Store) -> None:
    statements = _count_statements(empty_store)
    s = empty_store
    for bad in HOSTILE_IDS:
        calls = [
            lambda b=bad: s.placement(b),
            lambda b=bad: s.placement_history(b),
            lambda b=bad: s.move_client(b, "app-2", 1),
            lambda b=bad: s.move_client("acme", b, 1),
            lambda b=bad: s.seed_placements({b: "app-1"}),
            lambda b=bad: s.seed_placements({"acme": b}),
            lambda b=bad: s.open_incident(b, "key", "title", {}),
            lambda b=bad: s.snapshots(client_id=b),
            lambda b=bad: s.latest_verified_snapshot(b),
            lambda b=bad: s.mark_snapshot_verified(b, "acme", "snap", T0, True),
            lambda b=bad: s.start_maintenance("server", b),
            lambda b=bad: s.drills(client_id=b),
            lambda b=bad: s.record_snapshot(
                server_id="app-1",
                client_id=b,
                mirror_id="mir-1",
                snapshot_id="s",
                taken_at=T0,
                files=0,
                bytes=0,
                new_bytes=0,
            ),
        ]
        for call in calls:
            with pytest.raises(UnsafeInputError, match="refused"):
                call()
    assert statements == []


# -- incidents and timeline -----------------------------------------------------------


def test_open_incident_is_idempotent_until_resolved(store: Store) -> None:
    scope = {"servers": ["app-1"], "clients": ["acme"]}
    first, created = store.open_incident(
        "outage", "outage:app-1", "app-1 down", scope, flow_run_id="probe-1", at=T0
    )
    assert created and first.state == "open" and first.scope == scope and first.paging
    again, created_again = store.open_incident("outage", "outage:app-1", "other title", {})
    assert not created_again and again == first

    store.resolve(first.id, by="alice")
    reopened, created = store.open_incident("outage", "outage:app-1", "app-1 down again", scope)
    assert created and reopened.id != first.id
    assert [i.id for i in store.incidents(states=["open"])] == [reopened.id]
    assert [i.id for i in store.incidents(states="resolved")] == [first.id]
    assert store.incidents(kind="drill-failed") == []
    assert len(store.incidents()) == 2
    with pytest.raises(PermanentError, match="unknown incident state"):
        store.incidents(states=["closed"])

    (opened,) = store.timeline(first.id)[:1]
    assert (opened.kind, opened.flow_run_id, opened.at) == ("opened", "probe-1", T0)
    assert opened.data["dedupe_key"] == "outage:app-1"


def _race_opener(url: str, keys: list[str], barrier: Any, results: Any) -> None:
    store = Store(url)
    try:
        for key in keys:
            barrier.wait(timeout=60)
            incident, created = store.open_incident("outage", key, f"{key} down", {"x": 1})
            results.put((key, incident.id, created))
    except BaseException as exc:
        barrier.abort()
        results.put(("error", 0, repr(exc)))
        raise
    finally:
        store.close()


def test_two_processes_opening_one_incident_get_one(store: Store, db_url: str) -> None:
    keys = [f"outage:app-{n}" for n in range(RACE_ROUNDS)]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_race_opener, args=(db_url, keys, barrier, results)) for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in range(2 * len(keys))]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0, outcomes
    for key in keys:
        mine = [o for o in outcomes if o[0] == key]
        assert len({incident_id for _, incident_id, _ in mine}) == 1, mine
        assert sorted(created for _, _, created in mine) == [False, True], mine
    incidents = store.incidents()
    assert sorted(i.dedupe_key for i in incidents) == keys
    for incident in incidents:
        assert [e.kind for e in store.timeline(incident.id)] == ["opened"]


def test_incident_lifecycle_and_timeline(store: Store) -> None:
    inc, _ = store.open_incident("outage", "k", "app-1 down", {}, at=T0)
    acked = store.acknowledge(inc.id, "alice", "on it", "esc-1", at=T0 + timedelta(minutes=2))
    assert (acked.state, acked.acknowledged_by) == ("acknowledged", "alice")
    assert acked.acknowledged_at == T0 + timedelta(minutes=2)
    assert store.acknowledge(inc.id, "bob") == acked  # second ack: no change

    recovered = store.mark_recovered(inc.id, at=T0 + timedelta(minutes=10), flow_run_id="probe-2")
    assert (recovered.state, recovered.recovered_at) == ("recovered", T0 + timedelta(minutes=10))
    assert store.mark_recovered(inc.id) == recovered

    resolved = store.resolve(inc.id, by="alice", note="disk replaced", at=T0 + timedelta(hours=1))
    assert (resolved.state, resolved.resolved_by) == ("resolved", "alice")
    assert store.resolve(inc.id, by="bob") == resolved  # resolving twice: a no-op
    assert store.mark_recovered(inc.id) == resolved
    with pytest.raises(PermanentError, match="already resolved"):
        store.acknowledge(inc.id, "carol")

    annotated = store.annotate(inc.id, cause="disk", measures="failover", at=T0 + timedelta(days=1))
    assert (annotated.cause, annotated.measures, annotated.prevention) == ("disk", "failover", None)
    assert store.annotate(inc.id, cause="disk") == annotated  # unchanged: no entry

    # An entry stamped earlier sorts by time, not by insertion.
    store.add_timeline(
        inc.id,
        "first-failure",
        "first failed check",
        flow_run_id="probe-1",
        data={"status": 503},
        at=T0 - timedelta(minutes=3),
    )
    entries = store.timeline(inc.id)
    assert [e.kind for e in entries] == [
        "first-failure",
        "opened",
        "acknowledged",
        "recovered",
        "resolved",
        "annotated",
    ]
    assert entries[0].data == {"status": 503}
    assert entries[2].message == "acknowledged by alice: on it"
    assert entries[2].flow_run_id == "esc-1"
    assert entries[3].flow_run_id == "probe-2"
    assert entries[5].data == {"cause": "disk", "measures": "failover"}
    assert [e.at for e in entries] == sorted(e.at for e in entries)


def test_late_acknowledgement_of_recovered_incident(store: Store) -> None:
    inc, _ = store.open_incident("outage", "k", "t", {})
    store.mark_recovered(inc.id)
    late = store.acknowledge(inc.id, "alice")
    assert (late.state, late.acknowledged_by) == ("recovered", "alice")


def test_incident_errors(store: Store) -> None:
    with pytest.raises(PermanentError, match="no incident with id 999"):
        store.acknowledge(999, "alice")
    with pytest.raises(PermanentError, match="no incident with id 999"):
        store.add_timeline(999, "note", "x")
    assert store.incident(999) is None
    with pytest.raises(PermanentError, match="not JSON-serialisable"):
        store.open_incident("outage", "k", "t", {"when": T0})
    with pytest.raises(PermanentError, match="no time zone"):
        store.open_incident("outage", "k", "t", {}, at=datetime(2026, 1, 1))


def test_records_are_detached_frozen_values(store: Store) -> None:
    scope: dict[str, Any] = {"servers": ["app-1"]}
    inc, _ = store.open_incident("outage", "k", "t", scope)
    scope["servers"].append("app-2")  # the caller's dict is not the record's
    got = store.incident(inc.id)
    assert isinstance(got, Incident) and dataclasses.is_dataclass(got)
    assert got.scope == {"servers": ["app-1"]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.state = "resolved"  # type: ignore[misc]


# -- notices --------------------------------------------------------------------------


def test_notices_idempotency_and_status(store: Store) -> None:
    inc, _ = store.open_incident("outage", "k", "t", {})
    fields: dict[str, Any] = {
        "incident_id": inc.id,
        "step": "level-1",
        "channel": "sms",
        "recipient": "+27820000000",
        "subject": "",
        "body": "app-1 is down",
    }
    notice, created = store.record_notice("n1", **fields)
    assert created and (notice.status, notice.attempts, notice.receipt) == ("pending", 0, None)
    again, created_again = store.record_notice("n1", **{**fields, "body": "different"})
    assert not created_again and again == notice and again.body == "app-1 is down"
    assert "app-1 is down" not in repr(notice)  # bodies stay out of logs

    failed = store.mark_notice_failed("n1", "throttled")
    assert (failed.status, failed.attempts, failed.error) == ("failed", 1, "throttled")
    sent = store.mark_notice_sent("n1", "sns-msg-1", at=T0)
    assert (sent.status, sent.attempts, sent.receipt, sent.sent_at) == ("sent", 2, "sns-msg-1", T0)
    assert sent.error is None
    assert store.mark_notice_sent("n1", "sns-msg-2") == sent  # idempotent
    assert store.mark_notice_failed("n1", "late error") == sent  # sent stays sent
    assert store.notice("n1") == sent

    store.record_notice("n2", **{**fields, "channel": "email", "subject": "down"})
    skipped = store.mark_notice_skipped("n2", "resolved meanwhile")
    assert skipped.status == "skipped"
    store.record_notice("n3", **{**fields, "incident_id": None})
    assert [n.idempotency_key for n in store.notices(incident_id=inc.id)] == ["n1", "n2"]
    assert [n.idempotency_key for n in store.notices()] == ["n1", "n2", "n3"]
    assert store.notice("nope") is None
    with pytest.raises(PermanentError, match="no notice"):
        store.mark_notice_sent("nope", "r")
    with pytest.raises(PermanentError, match="no incident"):
        store.record_notice("n4", **{**fields, "incident_id": 999})


# -- probe ----------------------------------------------------------------------------


def test_probe_minute_upsert_adds(store: Store) -> None:
    minute = datetime(2026, 11, 30, 7, 30, 42, 5, tzinfo=timezone(timedelta(hours=2)))
    start = datetime(2026, 11, 30, 5, 30, tzinfo=UTC)
    assert store.record_probe_minute("acme", minute, 6, 1, 120.0).latency_ms_max == 120.0
    second = store.record_probe_minute("acme", start + timedelta(seconds=50), 6, 2, None)
    assert (second.minute, second.checks, second.failures) == (start, 12, 3)
    assert second.latency_ms_max == 120.0  # None does not erase the maximum
    assert store.record_probe_minute("acme", start, 1, 0, 450).latency_ms_max == 450.0
    store.record_probe_minute("acme", start + timedelta(minutes=1), 6, 0, 80)
    store.record_probe_minute("beta", start, 6, 6, None)
    rows = store.probe_minutes(target="acme")
    assert [(r.minute, r.checks, r.failures) for r in rows] == [
        (start, 13, 3),
        (start + timedelta(minutes=1), 6, 0),
    ]
    assert len(store.probe_minutes(since=start + timedelta(minutes=1))) == 1
    assert len(store.probe_minutes(until=start + timedelta(minutes=1))) == 2
    with pytest.raises(PermanentError, match="cannot exceed"):
        store.record_probe_minute("acme", start, 1, 2)


def test_probe_transitions(store: Store) -> None:
    store.record_probe_transition("acme", "up", "suspect", at=T0, detail="timeout")
    store.record_probe_transition("acme", "suspect", "down", at=T0 + timedelta(minutes=3))
    store.record_probe_transition("beta", "up", "suspect", at=T0 + timedelta(minutes=1))
    assert [t.to_state for t in store.probe_transitions()] == ["suspect", "suspect", "down"]
    acme = store.probe_transitions(target="acme")
    assert [(t.from_state, t.to_state, t.at) for t in acme] == [
        ("up", "suspect", T0),
        ("suspect", "down", T0 + timedelta(minutes=3)),
    ]
    assert acme[0].detail == "timeout"
    later = store.probe_transitions(since=T0 + timedelta(minutes=1))
    assert [t.target for t in later] == ["beta", "acme"]


# -- maintenance ----------------------------------------------------------------------


def test_maintenance_windows(store: Store) -> None:
    now = T0
    ongoing = store.start_maintenance(
        "server", "app-1", reason="disk swap", created_by="alice", starts_at=now
    )
    bounded = store.start_maintenance(
        "dc", "jhb", starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=1)
    )
    future = store.start_maintenance("client", "acme", starts_at=now + timedelta(days=1))
    assert [w.id for w in store.active_maintenance(now)] == [bounded.id, ongoing.id]
    assert [w.id for w in store.active_maintenance(now + timedelta(hours=2))] == [ongoing.id]
    assert [w.id for w in store.active_maintenance(now + timedelta(days=1))] == [
        ongoing.id,
        future.id,
    ]

    ended = store.end_maintenance(ongoing.id, at=now + timedelta(minutes=30))
    assert ended.ends_at == now + timedelta(minutes=30)
    assert store.end_maintenance(ongoing.id, at=now + timedelta(hours=5)) == ended  # unchanged
    cancelled = store.end_maintenance(future.id, at=now)
    assert cancelled.ends_at == cancelled.starts_at
    assert store.active_maintenance(now + timedelta(days=1)) == []
    assert ended.is_active(now) and not ended.is_active(now + timedelta(hours=1))

    with pytest.raises(PermanentError, match="scope kind"):
        store.start_maintenance("planet", "earth")
    with pytest.raises(PermanentError, match="before it starts"):
        store.start_maintenance("server", "app-1", starts_at=now, ends_at=now - timedelta(1))
    with pytest.raises(PermanentError, match="no maintenance window"):
        store.end_maintenance(999)


# -- snapshot catalogue and drills ----------------------------------------------------


def _snapshot(store: Store, mirror: str, snap: str, taken: datetime, **over: Any) -> Any:
    values: dict[str, Any] = {
        "server_id": "app-1",
        "client_id": "acme",
        "mirror_id": mirror,
        "snapshot_id": snap,
        "taken_at": taken,
        "files": 10,
        "bytes": 5 * 2**30,
        "new_bytes": 1000,
    }
    return store.record_snapshot(**{**values, **over})


def test_snapshot_upsert_and_latest_verified(store: Store) -> None:
    h = timedelta(hours=1)
    first = _snapshot(store, "mir-1", "2026-11-30T05", T0, flow_run_id="m-1")
    assert first.bytes == 5 * 2**30  # BIGINT
    store.mark_snapshot_verified("mir-1", "acme", "2026-11-30T05", T0 + h / 2, ok=True)
    again = _snapshot(store, "mir-1", "2026-11-30T05", T0, files=11, flow_run_id="m-2")
    assert (again.id, again.files, again.flow_run_id) == (first.id, 11, "m-2")
    assert again.verified_at == T0 + h / 2  # a re-record keeps the verification
    assert len(store.snapshots()) == 1

    _snapshot(store, "mir-1", "2026-11-30T06", T0 + h)  # newer, not verified
    _snapshot(store, "mir-1", "2026-11-30T07", T0 + 2 * h)
    damaged = store.mark_snapshot_verified("mir-1", "acme", "2026-11-30T07", T0 + 3 * h, ok=False)
    assert damaged.status == "damaged"
    _snapshot(store, "mir-2", "2026-11-30T06", T0 + h)
    store.mark_snapshot_verified("mir-2", "acme", "2026-11-30T06", T0 + 2 * h, ok=True)
    _snapshot(store, "mir-2", "2026-11-30T09", T0 + 4 * h, client_id="beta")
    store.mark_snapshot_verified("mir-2", "beta", "2026-11-30T09", T0 + 5 * h, ok=True)

    best_mir1 = store.latest_verified_snapshot("acme", "mir-1")
    assert best_mir1 is not None and best_mir1.snapshot_id == "2026-11-30T05"
    best_any = store.latest_verified_snapshot("acme")
    assert best_any is not None and (best_any.mirror_id, best_any.snapshot_id) == (
        "mir-2",
        "2026-11-30T06",
    )
    assert store.latest_verified_snapshot("gamma") is None
    assert [s.snapshot_id for s in store.snapshots(client_id="acme", mirror_id="mir-1")] == [
        "2026-11-30T05",
        "2026-11-30T06",
        "2026-11-30T07",
    ]
    assert len(store.snapshots(mirror_id="mir-2")) == 2
    with pytest.raises(PermanentError, match="no snapshot"):
        store.mark_snapshot_verified("mir-1", "acme", "nope", T0, ok=True)
    with pytest.raises(PermanentError, match="snapshot status"):
        _snapshot(store, "mir-1", "x", T0, status="fine")


def test_snapshot_root_hash_and_run_seconds_are_checked(store: Store) -> None:
    digest = "ab" * 32
    row = _snapshot(store, "mir-1", "s1", T0, root_sha256=digest, run_seconds=12.5)
    assert (row.root_sha256, row.run_seconds) == (digest, 12.5)
    assert _snapshot(store, "mir-1", "s2", T0).root_sha256 is None  # not known: not invented
    before = store.snapshots()
    for bad in ("AB" * 32, "ab" * 31, "sha256:" + digest, 7):
        with pytest.raises(PermanentError, match="root_sha256"):
            _snapshot(store, "mir-1", "s1", T0, root_sha256=bad)
    for seconds in (-1.0, float("nan"), True):
        with pytest.raises(PermanentError, match="run_seconds"):
            _snapshot(store, "mir-1", "s1", T0, run_seconds=seconds)
    assert store.snapshots() == before  # refused input changed nothing


def test_drills(store: Store) -> None:
    ok = store.record_drill(
        client_id="acme",
        mirror_id="mir-2",
        snapshot_id="2026-11-30T05",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=95),
        ok=True,
        restore_seconds=80.5,
        snapshot_age_seconds=1800,
        flow_run_id="drill-1",
    )
    assert (ok.ok, ok.restore_seconds, ok.snapshot_age_seconds) == (True, 80.5, 1800.0)
    store.record_drill(
        client_id="beta",
        mirror_id="mir-2",
        snapshot_id="2026-11-30T05",
        started_at=T0 - timedelta(hours=1),
        finished_at=T0,
        ok=False,
        restore_seconds=0,
        snapshot_age_seconds=0,
        detail="hash mismatch in chunk 3",
    )
    assert [d.client_id for d in store.drills()] == ["beta", "acme"]
    assert store.drills(client_id="acme") == [ok]
    with pytest.raises(PermanentError, match="before it started"):
        store.record_drill(
            client_id="acme",
            mirror_id="mir-2",
            snapshot_id="s",
            started_at=T0,
            finished_at=T0 - timedelta(seconds=1),
            ok=True,
            restore_seconds=1,
            snapshot_age_seconds=1,
        )


# -- time -----------------------------------------------------------------------------


def test_aware_utc_datetimes_round_trip(store: Store, db_url: str) -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=ist)
    utc_equivalent = datetime(2026, 3, 28, 20, 0, 15, 123456, tzinfo=UTC)
    store.seed_placements({"acme": "app-1"}, at=local)
    inc, _ = store.open_incident("outage", "k", "t", {}, at=local)
    _snapshot(store, "mir-1", "s1", local)

    def check(s: Store) -> None:
        values = [
            s.placements()[0].updated_at,
            s.placement_history("acme")[0].at,
            s.incidents()[0].opened_at,
            s.timeline(inc.id)[0].at,
            s.snapshots()[0].taken_at,
        ]
        for value in values:
            assert value == utc_equivalent
            assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
            assert value.microsecond == 123456

    check(store)
    if store.dialect == "postgresql":
        # Another session time zone must not change what comes back.
        with Store(f"{db_url}?options=-c%20timezone%3DAsia/Kolkata") as other:
            check(other)
    assert store.incidents(states=["open"])[0].opened_at.tzinfo == UTC
    with pytest.raises(PermanentError, match="no time zone"):
        store.probe_transitions(since=datetime(2026, 1, 1))
