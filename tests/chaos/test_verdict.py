"""The verdict: a fault held only when every must-hold rule held; each broken rule is
one note; the JSON row has exactly the issue's keys."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ppo_dr.lab.chaos.catalogue import BY_NAME
from ppo_dr.lab.chaos.verdict import (
    RESULT_KEYS,
    Observation,
    duplicates,
    judge,
    judge_soak,
    lost_counts,
    timeline_events,
    unexplained_losses,
)
from tests.chaos.judging import assert_fails_saying

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


#: A power cut that went as it should: declared, paged, failed over, nothing lost
#: that the restored snapshot (taken 30 s before the cut) held.
GOOD_OUTAGE = Observation(
    fault="power",
    target="app-jhb1-1",
    injected_at=T0,
    healed_at=at(90),
    healthy_at=at(95),
    first_failed_at=at(2),
    incidents=((7, at(22)),),
    pages=(at(24), at(24)),
    notice_keys=(
        "incident:7/step:page.e0.r0.l1/to:sipho/via:sms",
        "incident:7/step:page.e0.r0.l1/to:sipho/via:email",
    ),
    failover_state="done",
    failover_steps=(("approved", at(40)), ("restore", at(60)), ("finished (done)", at(80))),
    rto_s=58.0,
    clients=("acme",),
    lost_seqs={"acme": ((101, at(-10)), (102, at(-5)))},
    snapshot_at={"acme": at(-30)},
    snapshots_before=4,
    snapshots_intact=True,
)
GOOD_FLAP = replace(
    GOOD_OUTAGE,
    fault="flapping",
    incidents=(),
    pages=(),
    notice_keys=(),
    failover_state=None,
    failover_steps=(),
    rto_s=None,
    lost_seqs={"acme": ()},
)


def test_a_clean_outage_holds_and_its_row_has_exactly_the_issue_keys() -> None:
    result = judge(BY_NAME["power"], GOOD_OUTAGE)
    assert result.passed, result.notes
    row = result.as_json()
    assert tuple(row) == RESULT_KEYS
    assert row == {
        "fault": "power",
        "target": "app-jhb1-1",
        "passed": True,
        "detected_after_s": 2.0,
        "incidents_opened": 1,
        "pages_sent": 2,
        "duplicate_notices": 0,
        "rto_s": 58.0,
        "acked_writes_lost": 2,
        "lost_beyond_rpo": 0,
        "snapshots_intact": True,
        "notes": [],
    }


BROKEN = [
    ("power", {"incidents": ()}, "0 outage incidents opened"),
    ("power", {"incidents": ((7, at(22)), (8, at(50)))}, "2 outage incidents opened"),
    ("power", {"first_failed_at": None}, "no failed check"),
    ("power", {"pages": ()}, "nobody was paged"),
    ("power", {"failover_state": "partial"}, "did not complete (state: partial)"),
    ("power", {"failover_state": None}, "did not complete (state: none)"),
    ("power", {"rto_s": None}, "no RTO"),
    ("power", {"lost_seqs": {"acme": ((50, at(-60)),)}}, "1 write(s) acknowledged before"),
    ("power", {"lost_seqs": None}, "could not be checked"),
    ("power", {"healthy_at": None}, "not healthy again"),
    ("power", {"notice_keys": ("k", "k", "k")}, "2 notice(s) sent twice"),
    ("power", {"snapshots_intact": False}, "not all intact"),
    ("power", {"snapshots_intact": None}, "not all intact"),
    ("power", {"problems": ("heal of x failed",)}, "heal of x failed"),
    ("flapping", {"incidents": ((3, at(30)),)}, "1 incident(s) opened"),
    ("flapping", {"pages": (at(31),)}, "1 page(s) sent"),
    ("flapping", {"lost_seqs": {"acme": ((9, at(1)),)}}, "1 acknowledged write(s) missing"),
    ("flapping", {"healthy_at": None}, "not healthy again"),
]


@pytest.mark.parametrize(("fault", "change", "note"), BROKEN)
def test_each_broken_rule_fails_the_fault_with_its_note(
    fault: str, change: dict[str, object], note: str
) -> None:
    good = GOOD_FLAP if fault == "flapping" else GOOD_OUTAGE
    assert_fails_saying(judge(BY_NAME[fault], replace(good, **change)), note)  # type: ignore[arg-type]


def test_a_second_incident_when_a_hung_server_thaws_fails_hang() -> None:
    thawed = replace(GOOD_OUTAGE, fault="hang", incidents=((7, at(22)), (9, at(100))))
    result = judge(BY_NAME["hang"], thawed)
    assert not result.passed
    assert result.incidents_opened == 2


def test_a_snapshot_of_the_broken_data_root_fails_disk_only() -> None:
    taken = replace(GOOD_OUTAGE, snapshots_taken_of_broken=1)
    assert not judge(BY_NAME["disk"], taken).passed
    assert judge(BY_NAME["power"], taken).passed


def test_other_incident_kinds_are_noted_without_failing() -> None:
    result = judge(BY_NAME["power"], replace(GOOD_OUTAGE, other_incidents=("#9 stale",)))
    assert result.passed
    assert result.notes == ["also opened (not outages): #9 stale"]


def test_flapping_holds_with_no_incident_no_page_and_nothing_lost() -> None:
    result = judge(BY_NAME["flapping"], GOOD_FLAP)
    assert result.passed, result.notes
    assert result.rto_s is None
    assert result.acked_writes_lost == 0


def test_an_unimplemented_fault_is_never_judged_held() -> None:
    assert not judge(BY_NAME["clock-skew"], GOOD_FLAP).passed


def test_losses_within_the_ack_window_of_the_snapshot_are_not_beyond_the_rpo() -> None:
    snap = {"a": at(0)}
    seqs = {"a": ((1, at(-2.5)), (2, at(-1.5)), (3, at(5)))}
    obs = replace(GOOD_OUTAGE, lost_seqs=seqs, snapshot_at=snap, ack_window_s=2.0)
    assert lost_counts(obs) == (3, 1)
    no_snapshot = replace(obs, snapshot_at={})
    assert lost_counts(no_snapshot) == (3, 3)
    assert lost_counts(replace(obs, lost_seqs=None)) == (None, None)


def test_duplicates_count_lines_beyond_the_first_per_key() -> None:
    assert duplicates([]) == 0
    assert duplicates(["a", "b"]) == 0
    assert duplicates(["a", "a", "b", "a", "b"]) == 3


def test_timeline_events_are_in_seconds_after_the_injection_in_time_order() -> None:
    events = timeline_events(GOOD_OUTAGE)
    assert events[0] == ("fault injected", 0.0)
    assert events[-1] == ("healthy again", 95.0)
    assert [s for _, s in events] == sorted(s for _, s in events)
    assert ("incident #7 declared", 22.0) in events
    assert ("failover: restore", 60.0) in events
    quiet = timeline_events(replace(GOOD_FLAP, first_failed_at=None, healthy_at=None))
    assert [w for w, _ in quiet] == ["fault injected", "healed"]


def test_a_dc_restore_from_the_lost_dc_or_outside_residency_fails_dc() -> None:
    lost_dc = replace(GOOD_OUTAGE, fault="dc", target="jhb1")
    assert judge(BY_NAME["dc"], lost_dc).passed
    assert judge(BY_NAME["dc"], lost_dc).rto_s == 58.0
    wrong = ("acme restored into app-lon1-1 (GB); allowed: ZA",)
    result = judge(BY_NAME["dc"], replace(lost_dc, misplaced=wrong))
    assert not result.passed
    assert wrong[0] in result.notes


def test_a_soak_holds_when_every_missing_write_was_lost_by_a_fault() -> None:
    power = judge(BY_NAME["power"], GOOD_OUTAGE)  # lost acme 101, 102
    assert power.lost == {"acme": (101, 102)}
    final = judge_soak([power], {"acme": [101, 102], "karoo": []}, [])
    assert final.passed, final.notes
    assert (final.fault, final.target) == ("soak-final", "fleet")
    assert (final.acked_writes_lost, final.lost_beyond_rpo) == (2, 0)
    assert tuple(final.as_json()) == RESULT_KEYS


@pytest.mark.parametrize(
    ("missing", "problems", "note"),
    [
        ({"acme": [101, 103]}, [], "acme: 1 acknowledged write(s) lost outside any fault"),
        ({"karoo": [5]}, [], "karoo: 1 acknowledged write(s) lost outside any fault"),
        (None, [], "could not be read back"),
        ({}, ["mirror-1: client acme, file f: hash mismatch"], "hash mismatch"),
    ],
)
def test_a_soak_fails_on_a_silent_loss_or_a_damaged_repository(
    missing: dict[str, list[int]] | None, problems: list[str], note: str
) -> None:
    final = judge_soak([judge(BY_NAME["power"], GOOD_OUTAGE)], missing, problems)
    assert not final.passed
    assert any(note in n for n in final.notes), final.notes
    assert final.snapshots_intact is (not problems)


def test_a_soak_with_a_fault_that_did_not_hold_fails() -> None:
    broken = judge(BY_NAME["power"], replace(GOOD_OUTAGE, pages=()))
    final = judge_soak([broken], {}, [])
    assert not final.passed
    assert "faults that did not hold: power" in final.notes


def test_unexplained_losses_are_those_no_fault_counted() -> None:
    power = judge(BY_NAME["power"], GOOD_OUTAGE)
    assert unexplained_losses({"acme": [100, 101, 101]}, [power]) == {"acme": [100]}
    assert unexplained_losses({"acme": [101]}, [power]) == {}
