"""The incident report, pure: times, impact per client, notices, and hostile text escaped
in both renderings."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from ppo_dr.reports import build_report, duration_text, md, report_html, report_markdown
from ppo_dr.store import Incident, Notice, TimelineEntry

T0 = datetime(2026, 11, 30, 7, 31, 12, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script> **bold** [link](http://evil) | pipe & `code`'


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def incident(**changes: object) -> Incident:
    fields: dict[str, object] = {
        "id": 7,
        "kind": "outage",
        "dedupe_key": "server/app-jhb1-1",
        "state": "resolved",
        "title": "app server app-jhb1-1 down (2 clients)",
        "scope": {"server": "app-jhb1-1", "dc": "jhb1", "clients": ["acme", "karoo"]},
        "severity": "major",
        "paging": True,
        "opened_at": T0,
        "acknowledged_at": at(95),
        "acknowledged_by": "anna",
        "recovered_at": at(600),
        "resolved_at": at(900),
        "resolved_by": "anna",
        "cause": "PSU failed",
        "measures": "moved the clients to the spare",
        "prevention": "dual PSUs",
        "flow_run_id": None,
    }
    fields.update(changes)
    return Incident(**fields)  # type: ignore[arg-type]


def entry(i: int, seconds: float, kind: str, message: str, run: str | None = None) -> TimelineEntry:
    return TimelineEntry(i, 7, at(seconds), kind, message, run, {})


def notice(i: int, step: str, channel: str, to: str, status: str = "sent") -> Notice:
    return Notice(
        id=i,
        idempotency_key=f"incident:7/step:{step}/to:{to}/via:{channel}",
        incident_id=7,
        step=step,
        channel=channel,
        recipient=to,
        subject="s",
        body="secret body text",
        status=status,
        attempts=1,
        receipt=f"outbox:{i}" if status == "sent" else None,
        error="SendGrid 500" if status == "failed" else None,
        created_at=at(i),
        sent_at=at(i) if status == "sent" else None,
    )


TIMELINE = [
    entry(1, -180, "first-failure", "probe: first failed check"),
    entry(2, 0, "opened", "outage opened", "run-probe-1"),
    entry(3, 95, "acknowledged", "acknowledged by anna", "run-esc-1"),
    entry(4, 900, "resolved", "resolved by anna"),
]
NOTICES = [
    notice(1, "page.e0.r0.l1", "sms", "anna"),
    notice(2, "page.e0.r0.l1", "email", "anna", "failed"),
    notice(3, "clients", "email", "it@acme.example"),
]


def test_times_impact_and_notices() -> None:
    report = build_report(
        incident(),
        TIMELINE,
        NOTICES,
        client_names={"acme": "Acme Mining"},
        client_contacts={"acme": ["IT@acme.example"], "karoo": ["p@karoo.example"]},
    )
    assert report.time_to_detect == timedelta(seconds=180)
    assert report.time_to_ack == timedelta(seconds=95)
    assert report.time_to_recover == timedelta(seconds=780)
    assert report.time_to_resolve == timedelta(seconds=900)
    assert [(r.client_id, r.name, r.contacts_emailed) for r in report.impact] == [
        ("acme", "Acme Mining", 1),
        ("karoo", "karoo", 0),
    ]
    assert report.flow_runs == ("run-probe-1", "run-esc-1")
    text = report_markdown(report)
    for part in ("## Cause", "PSU failed", "## Measures taken", "## Prevention", "## Timeline"):
        assert part in text
    assert "3m 00s to detect" in text and "1m 35s to acknowledge by anna" in text
    assert "run\\-esc\\-1" in text or "run-esc-1" in text
    assert "Notices sent (1 failed, 2 sent)" in text
    assert "SendGrid 500" in text
    assert "secret body text" not in text  # bodies stay in the store
    page = report_html(report)
    assert page.startswith("<!DOCTYPE html>") and "<h2>Timeline</h2>" in page
    assert "secret body text" not in page


def test_an_open_incident_has_blanks_not_errors() -> None:
    report = build_report(
        incident(
            state="open",
            acknowledged_at=None,
            acknowledged_by=None,
            recovered_at=None,
            resolved_at=None,
            resolved_by=None,
            cause=None,
            measures=None,
            prevention=None,
            scope={},
        ),
        [],
        [],
    )
    text = report_markdown(report)
    assert "not recorded yet" in text and "No client named" in text
    assert report.time_to_ack is None and duration_text(None) == "-"
    assert "ongoing" not in text
    report_html(report)


def test_hostile_text_is_escaped_in_markdown_and_html() -> None:
    bad = incident(
        title=HOSTILE, cause=HOSTILE, acknowledged_by=HOSTILE, scope={"clients": [HOSTILE]}
    )
    timeline = [entry(1, 0, "opened", HOSTILE + "\n| injected | row |", HOSTILE)]
    notices = [notice(1, "clients", "email", HOSTILE, "failed")]
    report = build_report(bad, timeline, notices, client_names={HOSTILE: HOSTILE})
    text = report_markdown(report)
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "](http" not in text and "**bold**" not in text
    # Every table row keeps its column count: no pipe and no line break got through.
    for line in text.splitlines():
        if line.startswith("| ") and "injected" in line:
            assert len(re.findall(r"(?<!\\)\|", line)) == 5
    page = report_html(report)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "alert(&quot;x&quot;)" in page


def test_md_escapes_markdown_and_html() -> None:
    assert md("a_b*c") == "a\\_b\\*c"
    assert md("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"
    assert md("two\nlines") == "two lines"
    assert duration_text(timedelta(hours=1, minutes=2, seconds=5)) == "1h 02m 05s"
