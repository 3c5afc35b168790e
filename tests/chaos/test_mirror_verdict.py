"""The mirror-side faults' verdict: each of issue 10's rules for mirror-dies,
mirror-disk-full, host-key-change, latency and clock-skew breaks the fault on its own,
with a note that says which; a run that went right holds."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ppo_dr.lab.chaos.catalogue import BY_NAME
from ppo_dr.lab.chaos.mirror_verdict import (
    Alert,
    MirrorObservation,
    SnapRow,
    judge_mirror,
    rpo_seconds,
)
from ppo_dr.lab.chaos.verdict import RESULT_KEYS
from ppo_dr.mirror.manifest import snapshot_id_for
from tests.chaos.judging import assert_fails_saying

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
CLIENTS = ("acme", "bees")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rows(taken: float, mirror: str, status: str = "complete", sent: int = 100) -> list[SnapRow]:
    """One run's rows for both clients on *mirror* (verified 5 s later when complete)."""
    when = at(taken)
    verified = at(taken + 5) if status == "complete" else None
    return [
        SnapRow(c, mirror, snapshot_id_for(when), when, status, verified, sent) for c in CLIENTS
    ]


STALE = Alert(9, "mirror-stale", at(150), "client acme: mirror(s) behind", False, "acme")
#: mirror-on killed at T0 during the run taken at -3 s: the other mirror got it, the
#: dead one did not, two runs missed it, a stale alert, then the heal at 200 s and a
#: run at 240 s caught it up.
DIES = MirrorObservation(
    fault="mirror-dies",
    target="mirror-on",
    app_server="app-1",
    mirror="mirror-on",
    other="mirror-off",
    clients=CLIENTS,
    injected_at=T0,
    interval_s=60.0,
    threshold_s=120.0,
    healed_at=at(200),
    healthy_at=at(202),
    ended_at=at(260),
    rows=tuple(
        rows(-3, "mirror-off")
        + rows(-3, "mirror-on", "missing")
        + rows(57, "mirror-off")
        + rows(57, "mirror-on", "missing", 0)
        + rows(240, "mirror-off")
        + rows(240, "mirror-on")
    ),
    alerts=(STALE,),
    lost_seqs={"acme": (), "bees": ()},
    snapshots_intact=True,
    in_flight=True,
)
FULL = replace(DIES, fault="mirror-disk-full", in_flight=None)
HOST_KEY = replace(
    DIES,
    fault="host-key-change",
    rows=tuple(rows(-40, "mirror-off") + rows(-40, "mirror-on")),
    alerts=(
        Alert(
            11,
            "host-key-changed",
            at(30),
            "host key of mirror-on changed: it offered SHA256:new, fleet.yaml pins SHA256:old",
            False,
            "host key of mirror-on changed: it offered SHA256:new, fleet.yaml pins SHA256:old",
        ),
    ),
    pinned_fingerprint="SHA256:old",
    offered_fingerprint="SHA256:new",
)
LATENCY = replace(
    DIES,
    fault="latency",
    rows=tuple(rows(20, "mirror-off") + rows(20, "mirror-on")),
    rows_before=tuple(rows(-100, "mirror-on")),
    alerts=(),
)
SKEW = replace(
    LATENCY,
    fault="clock-skew",
    target="app-1",
    mirror=None,
    skew_seen_s=7199.6,
    healed_at=at(90),
    ended_at=at(100),
)
GOOD = {
    "mirror-dies": DIES,
    "mirror-disk-full": FULL,
    "host-key-change": HOST_KEY,
    "latency": LATENCY,
    "clock-skew": SKEW,
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_a_run_that_went_right_holds_with_the_issues_keys(name: str) -> None:
    result = judge_mirror(BY_NAME[name], GOOD[name])
    assert result.passed, result.notes
    assert list(result.as_json()) == list(RESULT_KEYS)
    assert result.rto_s is None and result.incidents_opened == 0
    assert result.acked_writes_lost == 0 and result.lost_beyond_rpo == 0


def test_incidents_elsewhere_are_reported_not_judged() -> None:
    busy = replace(LATENCY, elsewhere=("#14 app server drill-1 down",))
    result = judge_mirror(BY_NAME["latency"], busy)
    assert result.passed
    assert result.notes[-1] == "elsewhere meanwhile (not judged): #14 app server drill-1 down"


def test_detected_after_is_the_first_alert() -> None:
    assert judge_mirror(BY_NAME["mirror-dies"], DIES).detected_after_s == 150.0
    assert judge_mirror(BY_NAME["latency"], LATENCY).detected_after_s is None


@pytest.mark.parametrize(
    ("name", "change", "says"),
    [
        # common rules
        ("latency", {"outages": ((3, at(20)),)}, "outage incident"),
        ("latency", {"pages": (at(21),)}, "page(s) sent"),
        ("latency", {"notice_keys": ("k", "k")}, "sent twice"),
        ("latency", {"lost_seqs": {"acme": ((5, at(1)),)}}, "1 acknowledged write(s) lost"),
        ("latency", {"lost_seqs": None}, "could not be checked"),
        ("latency", {"healthy_at": None}, "not healthy again"),
        ("latency", {"snapshots_intact": False}, "not all intact"),
        ("latency", {"problems": ("no run finished",)}, "no run finished"),
        # mirror-dies
        ("mirror-dies", {"alerts": ()}, "no stale alert"),
        ("mirror-dies", {"alerts": (replace(STALE, paging=True),)}, "a stale alert paged"),
        ("mirror-dies", {"stale_open_at_end": (9,)}, "still open after the catch-up"),
        ("mirror-dies", {"healed_at": None}, "never healed"),
    ],
)
def test_each_rule_breaks_the_fault_on_its_own(
    name: str, change: dict[str, object], says: str
) -> None:
    assert_fails_saying(judge_mirror(BY_NAME[name], replace(GOOD[name], **change)), says)  # type: ignore[arg-type]


def _without(obs: MirrorObservation, mirror: str, taken: float) -> MirrorObservation:
    return replace(
        obs, rows=tuple(r for r in obs.rows if not (r.mirror == mirror and r.taken_at == at(taken)))
    )


def test_mirror_dies_needs_the_other_mirrors_snapshot_complete() -> None:
    broken = replace(
        DIES,
        rows=tuple(
            replace(r, status="missing") if r.mirror == "mirror-off" and r.taken_at == at(57) else r
            for r in DIES.rows
        ),
    )
    result = judge_mirror(BY_NAME["mirror-dies"], broken)
    assert not result.passed
    assert any("not complete on the other mirror mirror-off" in n for n in result.notes)


def test_mirror_dies_needs_the_next_run_to_catch_up() -> None:
    result = judge_mirror(BY_NAME["mirror-dies"], _without(DIES, "mirror-on", 240))
    assert any("did not catch mirror-on up for acme, bees" in n for n in result.notes)


def test_a_snapshot_listed_complete_on_the_broken_mirror_fails() -> None:
    lying = replace(
        FULL,
        rows=tuple(
            replace(r, status="complete", verified_at=at(60)) if r.taken_at == at(57) else r
            for r in FULL.rows
        ),
    )
    result = judge_mirror(BY_NAME["mirror-disk-full"], lying)
    assert any("listed complete on mirror-on while it was broken" in n for n in result.notes)


def test_disk_full_needs_the_run_to_record_the_mirror_missing() -> None:
    quiet = replace(FULL, rows=tuple(r for r in FULL.rows if r.status != "missing"))
    result = judge_mirror(BY_NAME["mirror-disk-full"], quiet)
    assert any("no run recorded its snapshot missing" in n for n in result.notes)


def test_disk_full_counts_the_run_in_flight_at_the_injection() -> None:
    """The disk fills mid-run: the run begun 3 s before the injection recorded the
    mirror missing, and the heal came before any other run (seen in the matrix)."""
    only_in_flight = replace(
        FULL,
        healed_at=at(40),
        rows=tuple(rows(-3, "mirror-off") + rows(-3, "mirror-on", "missing")),
    )
    result = judge_mirror(BY_NAME["mirror-disk-full"], only_in_flight)
    assert not any("no run recorded its snapshot missing" in n for n in result.notes)
    older = replace(only_in_flight, rows=tuple(rows(-90, "mirror-on", "missing")))
    result = judge_mirror(BY_NAME["mirror-disk-full"], older)  # a run before the fault
    assert any("no run recorded its snapshot missing" in n for n in result.notes)


def test_no_run_during_the_fault_tests_nothing() -> None:
    empty = replace(DIES, rows=tuple(rows(240, "mirror-on") + rows(240, "mirror-off")))
    result = judge_mirror(BY_NAME["mirror-dies"], empty)
    assert "no mirror run of the app server during the fault" in result.notes


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"alerts": ()}, "0 host-key incident(s) naming mirror-on"),
        ({"offered_fingerprint": "SHA256:old"}, "not seen replaced"),
        ({"offered_fingerprint": None}, "not seen replaced"),
        ({"pinned_fingerprint": "SHA256:other"}, "does not name the pinned key SHA256:other"),
        ({"rows": tuple(rows(30, "mirror-on"))}, "data reached mirror-on"),
        ({"rows": tuple(rows(30, "mirror-on", "missing", 512))}, "data reached mirror-on"),
    ],
)
def test_host_key_rules(change: dict[str, object], says: str) -> None:
    assert_fails_saying(judge_mirror(BY_NAME["host-key-change"], replace(HOST_KEY, **change)), says)  # type: ignore[arg-type]


def test_a_host_key_incident_that_pages_fails() -> None:
    paging = replace(HOST_KEY, alerts=(replace(HOST_KEY.alerts[0], paging=True),))
    result = judge_mirror(BY_NAME["host-key-change"], paging)
    assert any("pages; a changed host key must not" in n for n in result.notes)


def test_latency_reports_durations_and_rpo_and_fails_a_failed_run() -> None:
    result = judge_mirror(BY_NAME["latency"], LATENCY)
    assert "run to verified on the slow mirror: 5.0 s (before: 5.0 s)" in result.notes
    assert "RPO on it at the end: acme 240 s, bees 240 s" in result.notes
    failed = replace(LATENCY, rows=tuple(rows(20, "mirror-on", "missing")))
    notes = judge_mirror(BY_NAME["latency"], failed).notes
    assert any("runs failed on the slow mirror" in n for n in notes)
    assert any("no verified snapshot on the slow mirror-on for acme, bees" in n for n in notes)
    behind = replace(STALE, text="client acme: mirror(s) behind: mirror-on 3m 00s")
    stale = judge_mirror(BY_NAME["latency"], replace(LATENCY, alerts=(behind,)))
    assert not stale.passed
    assert "stale alert #9: the slow mirror-on fell behind" in stale.notes
    late = replace(STALE, text="client acme: newest verified snapshot is 2m 06s old")
    everyone_late = judge_mirror(BY_NAME["latency"], replace(LATENCY, alerts=(late,)))
    assert everyone_late.passed
    assert "stale alert #9 with every mirror late (not the link)" in everyone_late.notes


def test_clock_skew_reports_the_skew_seen_and_the_rpo() -> None:
    result = judge_mirror(BY_NAME["clock-skew"], SKEW)
    assert result.notes == [
        "app-1 reported its clock +7200 s off; RPO at the end: acme 80 s, bees 80 s"
    ]


def test_a_stale_alert_under_a_skewed_clock_is_reported_not_failed() -> None:
    result = judge_mirror(BY_NAME["clock-skew"], replace(SKEW, alerts=(STALE,)))
    assert result.passed, result.notes
    assert any(n.startswith("alerts: #9 mirror-stale") for n in result.notes)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"skew_seen_s": None}, "did not report its clock"),
        ({"skew_seen_s": 0.4}, "the skew was not in force"),
        ({"skew_seen_s": -7200.0}, "the skew was not in force"),
        ({"skew_seen_s": 7600.0}, "the skew was not in force"),
        ({"alerts": (replace(STALE, kind="host-key-changed"),)}, "incidents opened for a skewed"),
        ({"ended_at": at(4000)}, "RPO not within 0..1800 s for acme, bees"),
        ({"rows": ()}, "no verified snapshot while the clock was skewed"),
    ],
)
def test_clock_skew_rules(change: dict[str, object], says: str) -> None:
    assert_fails_saying(judge_mirror(BY_NAME["clock-skew"], replace(SKEW, **change)), says)  # type: ignore[arg-type]


def test_a_snapshot_named_or_dated_by_the_servers_clock_fails() -> None:
    ahead = at(20 + 7200)
    by_server = replace(
        SKEW, rows=tuple(replace(r, snapshot_id=snapshot_id_for(ahead)) for r in SKEW.rows)
    )
    notes = judge_mirror(BY_NAME["clock-skew"], by_server).notes
    assert any("is not its time" in n for n in notes)
    dated = replace(SKEW, rows=tuple(rows(20 + 7200, "mirror-on") + rows(20, "mirror-off")))
    notes = judge_mirror(BY_NAME["clock-skew"], dated).notes
    assert any("outside the fault's window" in n for n in notes)


def test_rpo_is_the_age_of_the_newest_verified_snapshot_at_the_end() -> None:
    assert rpo_seconds(LATENCY, "mirror-on") == {"acme": 240.0, "bees": 240.0}
    only_before = replace(LATENCY, rows=())
    assert rpo_seconds(only_before, "mirror-on") == {"acme": 360.0, "bees": 360.0}
    assert rpo_seconds(only_before, "mirror-off") == {}


def test_an_unknown_fault_has_no_rules() -> None:
    result = judge_mirror(BY_NAME["power"], LATENCY)
    assert not result.passed
    assert any("no mirror-side rules" in n for n in result.notes)
