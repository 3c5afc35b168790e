"""The eight questions, pure: each answer from hand-made records, the acknowledgement
rule (an approval counts only when it came first), writes lost never assumed, the
readiness of each client before the fault, links to the Prefect UI, hostile text."""

from __future__ import annotations

import pytest

from ppo_dr.report_answers import (
    IncidentAnswers,
    answer_questions,
    answers_html,
    answers_markdown,
    last_before,
    last_drill_before,
)
from ppo_dr.reports import build_report
from ppo_dr.store import Drill, FailoverResult, FailoverStep, Snapshot, TimelineEntry
from tests.ppo_dr.test_reports import HOSTILE, at, entry, incident, notice

UI = "http://127.0.0.1:4200"
PROBE, ESC, FAIL, MIRROR, DRILL = "run-probe", "run-esc", "run-fail", "run-mirror", "run-drill"


def approval(i: int, seconds: float, approve: bool = True) -> TimelineEntry:
    data = {"plan_id": "p1", "approve": approve, "by": "sipho"}
    return TimelineEntry(i, 7, at(seconds), "failover-approval", "plan p1", FAIL, data)


def step(i: int, client: str, name: str, start: float, took: float) -> FailoverStep:
    return FailoverStep(i, "p1", client, name, "done", 1, "", {}, at(start), at(start + took), FAIL)


def result(client: str, lost: int | None) -> FailoverResult:
    return FailoverResult(
        plan_id="p1", client_id=client, from_server="app-jhb1-1", to_server="spare-1",
        source_mirror="mirror-jhb1-1", snapshot_id="2026-11-30T065900Z", outcome="ok",
        rto_seconds=240.0, rpo_seconds=60.0, lost_writes=lost, restored_bytes=1,
        restored_files=1, restore_seconds=3.0, detail="", updated_at=at(300), flow_run_id=FAIL,
    )  # fmt: skip


def snapshot(i: int, taken: float, verified: float | None, status: str = "complete") -> Snapshot:
    return Snapshot(
        i, "app-jhb1-1", "acme", "mirror-jhb1-1", f"snap-{i}", at(taken), 1, 1, 1,
        None if verified is None else at(verified), status, MIRROR,
    )  # fmt: skip


def drill(i: int, start: float, ok: bool = True) -> Drill:
    return Drill(
        i, "acme", "mirror-cpt1-1", "s", at(start), at(start + 30), ok, 42.0, 600.0, "", DRILL
    )


def answers(timeline: list[TimelineEntry], **kw: object) -> IncidentAnswers:
    report = build_report(
        incident(flow_run_id=PROBE),
        [
            entry(1, -180, "first-failure", "probe: first failed check", PROBE),
            entry(2, 0, "declared", "declared", PROBE),
            entry(3, 1, "escalation-started", "", ESC),
            *timeline,
        ],
        [
            notice(1, "page.e0.r0.l1", "sms", "anna"),
            notice(2, "page.e0.r0.l1", "email", "anna", "failed"),
            notice(3, "public-down", "x", "public"),
            notice(4, "clients", "email", "it@acme.example"),
        ],
        failover_results=[result("acme", 0)],
        failover_steps=[step(1, "acme", "restore", 100, 20), step(2, "acme", "route", 120, 1)],
        clients_back={"acme": at(240)},
    )
    return answer_questions(report, ui_url=UI, **kw)  # type: ignore[arg-type]


def rows(a: IncidentAnswers, number: int) -> list[tuple[str, ...]]:
    return list(a.answers[number - 1].rows)


def runs(a: IncidentAnswers, number: int) -> list[str | None]:
    return list(a.answers[number - 1].runs)


def test_each_question_is_answered_with_the_run_that_did_it() -> None:
    a = answers([entry(4, 95, "acknowledged", "by anna", ESC)])
    assert [x.number for x in a.answers] == list(range(1, 9))
    assert rows(a, 1) == [
        ("first failed check", "2026-11-30 07:28:12Z", "probe: first failed check"),
        ("declared", "2026-11-30 07:31:12Z", "app server app-jhb1-1 down (2 clients)"),
    ]
    assert runs(a, 1) == [PROBE, PROBE]
    assert [(r[0], r[1], r[4]) for r in rows(a, 2)] == [
        ("anna", "sms", "sent"),
        ("anna", "email", "failed"),
    ]
    assert rows(a, 2)[1][5] == "SendGrid 500" and runs(a, 2) == [ESC, ESC]
    assert rows(a, 3) == [("anna", "2026-11-30 07:32:47Z", "1m 35s", "acknowledged")]
    assert [(r[0], r[1], r[4]) for r in rows(a, 4)] == [("public-down", "x", "sent")]
    # acme answered again at +240 s (front door), karoo is still out though recovered_at is set
    assert rows(a, 5)[0] == (
        "acme",
        "acme",
        "2026-11-30 07:28:12Z",
        "2026-11-30 07:35:12Z",
        "7m 00s",
    )
    assert rows(a, 6) == [
        ("acme", "restore", "done", "2026-11-30 07:32:52Z", "20s", "4m 00s"),
        ("acme", "route", "done", "2026-11-30 07:33:12Z", "1s", "4m 00s"),
    ]
    assert runs(a, 6) == [FAIL, FAIL]
    assert rows(a, 7) == [
        ("acme", "0", "measured from the workload log"),
        ("karoo", "unknown", "not measured"),  # never assumed
    ]
    assert runs(a, 7) == [FAIL, None]


@pytest.mark.parametrize(
    ("timeline", "expected"),
    [
        ([], []),
        ([approval(4, 60)], [("sipho", "1m 00s", "approved failover plan p1")]),
        (
            [entry(4, 95, "acknowledged", "", ESC), approval(5, 60)],
            [("sipho", "1m 00s", "approved")],
        ),
        (
            [approval(4, 120), entry(5, 95, "acknowledged", "", None)],
            [("anna", "1m 35s", "acknowledged")],
        ),
        ([approval(4, 60, approve=False)], []),  # a refusal is no acknowledgement
    ],
    ids=["nobody", "approval-only", "approval-first", "ack-first", "refused"],
)
def test_an_approval_counts_as_the_acknowledgement_only_when_it_came_first(
    timeline: list[TimelineEntry], expected: list[tuple[str, str, str]]
) -> None:
    a = answers(timeline)
    got = [(r[0], r[2], r[3]) for r in rows(a, 3)]
    assert len(got) == len(expected)
    for (who, after, how), (want_who, want_after, want_how) in zip(got, expected, strict=True):
        assert (who, after) == (want_who, want_after) and how.startswith(want_how)
    if expected:
        assert runs(a, 3) == [FAIL if expected[0][0] == "sipho" else ESC]


def test_readiness_is_the_last_verified_snapshot_and_drill_before_the_fault() -> None:
    fault = at(-180)
    snaps = [
        snapshot(1, -7200, -7100),
        snapshot(2, -3600, -3500),  # the one
        snapshot(3, -1800, None),  # never verified
        snapshot(4, -1700, -1600, status="damaged"),
        snapshot(5, -400, -100),  # verified after the fault began
        snapshot(6, 60, 90),  # after the fault
    ]
    assert last_before(fault, snaps) == snaps[1]
    assert last_before(fault, []) is None
    drills = [drill(1, -86400 * 2), drill(2, -86400, ok=False), drill(3, -190)]  # 3 ends after
    assert last_drill_before(fault, drills) == drills[1]
    a = answers([], snapshots={"acme": snaps[1]}, drills={"acme": drills[1]})
    assert rows(a, 8) == [
        ("acme", "last verified snapshot", "2026-11-30 06:31:12Z",
         "snap-2 on mirror-jhb1-1, verified 2026-11-30 06:32:52Z"),
        ("acme", "last DR drill", "2026-11-29 07:31:12Z", "FAILED: RTO 42s, RPO 10m 00s"),
        ("karoo", "last verified snapshot", "-", "none before the fault"),
        ("karoo", "last DR drill", "-", "none before the fault"),
    ]  # fmt: skip
    assert runs(a, 8) == [MIRROR, DRILL, None, None]


def test_both_renderings_link_every_run_and_escape_hostile_text() -> None:
    a = answers([TimelineEntry(4, 7, at(95), "acknowledged", "", ESC, {"by": HOSTILE})])
    page = answers_html(a)
    assert f'<a class="run" href="{UI}/runs/flow-run/{FAIL}">{FAIL}</a>' in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    text = answers_markdown(a)
    assert f"]({UI}/runs/flow-run/{ESC})" in text
    assert "<script>" not in text
    assert "### 8. Last verified snapshot and last DR drill" in text
    bare = answer_questions(build_report(incident(scope={}), [], []))
    assert "_nobody was paged_" in answers_markdown(bare)
    assert "<em>nobody acknowledged</em>" in answers_html(bare)
