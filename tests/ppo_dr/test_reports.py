"""The incident report, pure: times, impact per client, notices, and hostile text escaped
in both renderings."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ppo_dr.errors import PermanentError
from ppo_dr.report_html import report_html
from ppo_dr.reports import (
    build_report,
    duration_text,
    md,
    report_for_incident,
    report_markdown,
)
from ppo_dr.store import FailoverResult, Notice, Store, TimelineEntry
from tests.ppo_dr.incident_records import T0, incident, open_incident

HOSTILE = '<script>alert("x")</script> **bold** [link](http://evil) | pipe & `code`'


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


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
        open_incident(acknowledged_at=None, acknowledged_by=None, scope={}),
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


# --------------------------------------------------------------------------- failover

PLAN = "a1b2c3d4e5f60718"


def failed_over_store(tmp_path: Path) -> tuple[Store, int]:
    """A store with an outage incident and the real ledger rows of its failover: acme
    moved (3 writes lost), karoo moved (none lost), zulu rolled back."""
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.upgrade()
    inc, _ = store.open_incident(
        "outage",
        "server:app-jhb1-1",
        "app server app-jhb1-1 down (3 clients)",
        {"level": "server", "subject": "app-jhb1-1", "clients": ["acme", "karoo", "zulu"]},
        at=T0,
    )
    store.begin_failover(
        PLAN, "emergency", {"plan_id": PLAN}, incident_id=inc.id, flow_run_id="run-fo-1", at=at(20)
    )
    for client in ("acme", "karoo"):
        for i, step in enumerate(("restore", "verify", "switch", "health-front-door")):
            store.begin_step(PLAN, client, step, flow_run_id="run-fo-1", at=at(30 + 10 * i))
            store.finish_step(PLAN, client, step, at=at(35 + 10 * i))
    store.begin_step(PLAN, "zulu", "restore", flow_run_id="run-fo-1", at=at(30))
    store.finish_step(PLAN, "zulu", "restore", "rolled-back", "disk full", at=at(40))
    store.record_failover_result(
        PLAN, "acme", from_server="app-jhb1-1", to_server="app-cpt1-1", outcome="ok",
        source_mirror="mirror-jhb1-1", snapshot_id="2026-11-30T072900Z", rto_seconds=95.0,
        rpo_seconds=132.0, lost_writes=3, flow_run_id="run-fo-1",
    )  # fmt: skip
    store.record_failover_result(
        PLAN, "karoo", from_server="app-jhb1-1", to_server="app-cpt1-1", outcome="ok",
        source_mirror="mirror-cpt1-1", snapshot_id="2026-11-30T073000Z", rto_seconds=80.0,
        rpo_seconds=72.0, lost_writes=0, flow_run_id="run-fo-1",
    )  # fmt: skip
    store.record_failover_result(
        PLAN, "zulu", from_server="app-jhb1-1", to_server="app-cpt1-1", outcome="rolled-back",
        detail="PermanentError: disk full", flow_run_id="run-fo-1",
    )  # fmt: skip
    store.add_timeline(inc.id, "failover-finished", "failover partial", flow_run_id="run-fo-1")
    return store, inc.id


def test_the_report_gives_rto_rpo_and_data_lost_per_client(tmp_path: Path) -> None:
    store, incident_id = failed_over_store(tmp_path)
    with store:
        report = report_for_incident(store, incident_id)
    by_client = {r.client_id: r for r in report.recoveries}
    assert list(by_client) == ["acme", "karoo", "zulu"]
    acme = by_client["acme"]
    assert (acme.from_server, acme.to_server, acme.source_mirror) == (
        "app-jhb1-1",
        "app-cpt1-1",
        "mirror-jhb1-1",
    )
    assert acme.rto == timedelta(seconds=95) and acme.rpo == timedelta(seconds=132)
    assert acme.data_lost() == (
        "3 acknowledged write(s) lost: made after the restored snapshot (2m 12s old at the "
        "declaration)"
    )
    assert by_client["karoo"].data_lost().startswith("nothing: no acknowledged write lost")
    assert "not failed over" in by_client["zulu"].data_lost()
    assert "run-fo-1" in report.flow_runs
    assert [(s.client_id, s.step) for s in report.failover_steps][:2] == [
        ("acme", "restore"),
        ("acme", "verify"),
    ]

    text = report_markdown(report)
    assert "## Recovery per client (failover)" in text and "## Data lost" in text
    row = next(line for line in text.splitlines() if line.startswith("| acme | app-jhb1-1"))
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells == [
        "acme", "app-jhb1-1", "app-cpt1-1", "mirror-jhb1-1",
        "2026-11-30T072900Z", "2m 12s", "1m 35s", "3", "moved",
    ]  # fmt: skip
    assert "rolled back: PermanentError: disk full" in text
    assert "### Failover steps" in text and "rolled-back: disk full" in text
    page = report_html(report)
    assert "<h2>Recovery per client (failover)</h2>" in page and "<h2>Data lost</h2>" in page
    assert "<td>1m 35s</td>" in page and "<td>2m 12s</td>" in page


def test_unmeasured_loss_is_said_as_the_rpo_window() -> None:
    report = build_report(
        incident(),
        [],
        [],
        failover_results=[
            FailoverResult(
                plan_id=PLAN,
                client_id="acme",
                from_server="app-jhb1-1",
                to_server="app-cpt1-1",
                source_mirror="mirror-jhb1-1",
                snapshot_id="snap",
                outcome="ok",
                rto_seconds=40.0,
                rpo_seconds=600.0,
                lost_writes=None,
                restored_bytes=10,
                restored_files=1,
                restore_seconds=1.0,
                detail="",
                updated_at=at(50),
                flow_run_id="run-fo-1",
            )
        ],
    )
    (acme,) = report.recoveries
    assert acme.data_lost() == (
        "not measured; at most the writes of the last 10m 00s before the declaration "
        "(the restored snapshot's age)"
    )
    assert "not measured" in report_markdown(report)


def test_a_report_without_failover_has_no_recovery_section(tmp_path: Path) -> None:
    report = build_report(incident(), TIMELINE, NOTICES)
    assert report.recoveries == () and "Recovery per client" not in report_markdown(report)
    with Store(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        store.upgrade()
        with pytest.raises(PermanentError, match="no incident with id 42"):
            report_for_incident(store, 42)


def test_incident_show_and_report_cli_give_the_failover_per_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli.incident import incident_app

    store, incident_id = failed_over_store(tmp_path)
    store.close()
    monkeypatch.setenv("PPO_DR_DB_URL", f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.setenv("PPO_DR_FLEET", str(tmp_path / "no-fleet.yaml"))
    shown = CliRunner().invoke(incident_app, ["show", str(incident_id)])
    assert shown.exit_code == 0, shown.output
    assert f"plan {PLAN} (emergency): running  [run run-fo-1]" in shown.output
    assert (
        "acme: app-jhb1-1 -> app-cpt1-1  ok  RTO 1m 35s  RPO 2m 12s  writes lost 3" in shown.output
    )
    assert (
        "zulu: app-jhb1-1 -> app-cpt1-1  rolled-back  RTO -  RPO -  writes lost -" in shown.output
    )
    page = tmp_path / "report.html"
    out = CliRunner().invoke(incident_app, ["report", str(incident_id), "-o", str(page)])
    assert out.exit_code == 0, out.output
    assert "3 acknowledged write(s) lost" in page.read_text(encoding="utf-8")


def test_a_clients_outage_ends_when_it_answers_again_not_at_the_resolution() -> None:
    """Failed over at 6.5 min, resolved at 13 min, the dead server never recovered."""
    report = build_report(
        incident(recovered_at=None, resolved_at=at(600)),
        TIMELINE,
        NOTICES,
        clients_back={"acme": at(210), "karoo": at(150)},
    )
    outage = {r.client_id: duration_text(r.outage) for r in report.impact}
    assert outage == {"acme": "6m 30s", "karoo": "5m 30s"}
    assert report.service_back_at == at(210)
    text = report_markdown(report)
    assert "| recovered | 2026-11-30 07:34:42Z | 6m 30s of outage (every client" in text
    assert "- of outage" not in text and "- of outage" not in report_html(report)
    # A client nobody saw come back: its outage runs to the resolution; no service-back time.
    partly = build_report(
        incident(recovered_at=None, resolved_at=at(600)),
        TIMELINE,
        [],
        clients_back={"acme": at(210)},
    )
    assert [duration_text(r.outage) for r in partly.impact] == ["6m 30s", "13m 00s"]
    assert partly.service_back_at is None and partly.time_to_recover is None
    assert "| recovered | - | - |" in report_markdown(partly)


def test_the_store_says_when_each_client_answered_again(tmp_path: Path) -> None:
    """The failover's health check (declaration + RTO) or the probe's return to service,
    whichever came first; a flap back down restarts the wait."""
    store, incident_id = failed_over_store(tmp_path)
    with store:
        for target, moves in {
            "client:karoo": [
                ("pending", "down", 5), ("down", "recovering", 60), ("recovering", "up", 66),
            ],
            "client:zulu": [
                ("pending", "down", 5), ("down", "recovering", 200), ("recovering", "down", 204),
                ("down", "recovering", 300), ("recovering", "up", 306),
            ],
        }.items():  # fmt: skip
            for old, new, seconds in moves:
                store.record_probe_transition(target, old, new, at=at(seconds))
        report = report_for_incident(store, incident_id)
    outage = {r.client_id: duration_text(r.outage) for r in report.impact}
    assert outage == {"acme": "1m 55s", "karoo": "1m 00s", "zulu": "5m 00s"}
    assert report.incident.recovered_at is None and report.service_back_at == at(300)
    assert "5m 00s of outage (every client answering again)" in report_markdown(report)
