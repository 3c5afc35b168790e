"""Reading the evidence back from a real store (SQLite) and outbox: what counts as the
fault's incidents, its pages, its first failed check, a misplaced restore."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ppo_dr.escalation import notice_key
from ppo_dr.inventory import load_fleet
from ppo_dr.lab.chaos import records
from ppo_dr.store import Store

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
PLAN = "ab" * 16


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        opened.upgrade()
        yield opened


def test_only_incidents_opened_since_the_injection_count(store: Store) -> None:
    store.open_incident("outage", "outage:server:old", "old", {}, at=at(-5))
    new, _ = store.open_incident("outage", "outage:server:app-1", "new", {}, at=at(0))
    assert [i.id for i in records.incidents_since(store, T0)] == [new.id]


def test_the_first_failed_check_is_the_earliest_of_the_servers_hit(store: Store) -> None:
    store.record_probe_transition("server:app-1", "up", "pending", at=at(-3))  # before
    store.record_probe_transition("server:app-2", "up", "pending", at=at(4))
    store.record_probe_transition("server:app-1", "pending", "down", at=at(9))
    store.record_probe_transition("server:app-1", "down", "up", at=at(2))
    assert records.first_failed_check(store, ["app-1"], T0) == at(9)
    assert records.first_failed_check(store, ["app-1", "app-2"], T0) == at(4)
    assert records.first_failed_check(store, ["app-3"], T0) is None


def test_pages_are_sent_notices_of_an_escalation_level(store: Store) -> None:
    incident, _ = store.open_incident("outage", "k", "t", {}, at=at(0))
    for key, step in [("a", "page.e0.r0.l1"), ("b", "page.e0.r0.l2"), ("c", "public-0")]:
        store.record_notice(
            key,
            incident_id=incident.id,
            step=step,
            channel="sms",
            recipient="x",
            subject="s",
            body="b",
            at=at(1),
        )
    store.mark_notice_sent("a", "r", at=at(2))
    store.mark_notice_sent("c", "r", at=at(3))  # sent, but not a page
    assert records.pages_sent(store, [incident.id]) == [at(2)]  # "b" was never sent


def test_outbox_keys_are_the_incidents_lines_one_per_line(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.jsonl"
    page = notice_key(7, "page.e0.r0.l1", "sipho", "sms")
    keys = [page, page, notice_key(8, "page.e0.r0.l1", "sipho", "sms"), "not-a-notice-key"]
    outbox.write_text("".join(json.dumps({"key": k}) + "\n" for k in keys), encoding="utf-8")
    assert records.outbox_keys(outbox, [7]) == keys[:2]
    assert records.outbox_keys(tmp_path / "absent.jsonl", [7]) == []


def test_a_dc_restore_is_misplaced_from_the_lost_dc_or_outside_residency(
    store: Store,
) -> None:
    fleet = load_fleet(ROOT / "examples" / "fleet.yaml")
    store.begin_failover(PLAN, "emergency", {"scope": "dc"}, declared_at=at(0))
    moves = [
        ("acme-mining", "app-cpt1-1", "mirror-cpt1-1"),  # fine
        ("karoo-logistics", "app-lon1-1", "mirror-lon1-1"),  # GB, allowed ZA only
        ("ubuntu-health", "app-cpt1-1", "mirror-jhb1-1"),  # from the lost DC
        ("thames-advisory", "app-lon1-1", "mirror-lon1-1"),  # GB allowed
    ]
    for client, to, mirror in moves:
        store.record_failover_result(
            PLAN,
            client,
            from_server="app-jhb1-1",
            to_server=to,
            outcome="ok",
            source_mirror=mirror,
        )
    assert records.misplaced(fleet, store, PLAN, "jhb1") == [
        "karoo-logistics restored into app-lon1-1 (GB); allowed: ZA",
        "ubuntu-health restored from mirror-jhb1-1, in the lost DC",
    ]
