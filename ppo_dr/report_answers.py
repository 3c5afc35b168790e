"""The eight questions an incident report must answer, each with the Prefect run that did it.

1. the first failed check and the declaration; 2. who was paged, when, on which
channel, with what delivery status; 3. who acknowledged and when (a failover approval
counts when it came before any acknowledgement); 4. what was posted publicly and when;
5. which clients were affected and for how long (a client's outage ends when it answers
through the front door again, not when the incident is resolved); 6. every failover
step per client with its RTO; 7. acknowledged writes lost per client (measured, else
"unknown", never assumed); 8. each affected client's last verified snapshot before the
fault and its last DR drill before it.

Pure: :func:`answer_questions` reads an :class:`~ppo_dr.reports.IncidentReport` and the
catalogue rows it is given; :func:`answers_for_incident` fetches those from a store.
Every row names the flow run behind it, linked to Prefect's UI when its URL is known.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from ppo_dr.reports import (
    NOT_YET,
    IncidentReport,
    duration_text,
    md,
    time_text,
)
from ppo_dr.run_links import flow_run_link
from ppo_dr.store import Drill, Notice, Snapshot, TimelineEntry

if TYPE_CHECKING:
    from ppo_dr.store import Store

UNKNOWN: Final = "unknown"
NONE_BEFORE: Final = "none before the fault"
ACK_KIND: Final = "acknowledged"  # ppo_dr.incident_acks.ACK_KIND
APPROVAL_KINDS: Final = ("failover-approval", "migrate-approval")


@dataclass(frozen=True, slots=True)
class Answer:
    """One question, its answer as table rows, and the flow run behind each row."""

    number: int
    question: str
    head: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    runs: tuple[str | None, ...]
    none: str  # what to say when there is no row


@dataclass(frozen=True, slots=True)
class IncidentAnswers:
    """The eight answers of one incident, and Prefect's UI to link runs to."""

    answers: tuple[Answer, ...]
    ui_url: str | None = None

    def link(self, run: str | None) -> str | None:
        """The UI page of *run*, if both are known."""
        return flow_run_link(self.ui_url, run)


def _first(entries: Iterable[TimelineEntry], *kinds: str) -> TimelineEntry | None:
    return next((e for e in entries if e.kind in kinds), None)


def _answer(
    number: int,
    question: str,
    head: Sequence[str],
    rows: Sequence[tuple[tuple[str, ...], str | None]],
    none: str,
) -> Answer:
    return Answer(
        number,
        question,
        (*head, "Prefect run"),
        tuple(cells for cells, _ in rows),
        tuple(run for _, run in rows),
        none,
    )


def _declaration(report: IncidentReport) -> Answer:
    inc = report.incident
    first = _first(report.timeline, "first-failure")
    declared = _first(report.timeline, "declared")
    rows = [
        (
            (
                "first failed check",
                time_text(report.first_failure_at),
                first.message if first else NOT_YET,
            ),
            first.flow_run_id if first else None,
        ),
        (
            ("declared", time_text(inc.opened_at), inc.title),
            inc.flow_run_id or (declared.flow_run_id if declared else None),
        ),
    ]
    return _answer(
        1, "First failed check, and the declaration", ("what", "at (UTC)", "detail"), rows, ""
    )


def _escalation_run(report: IncidentReport) -> str | None:
    started = _first(report.timeline, "escalation-started")
    return started.flow_run_id if started else None


def _delivery(notice: Notice) -> tuple[str, ...]:
    """When a notice was made and delivered, its status, and its receipt or error."""
    return (
        notice.channel,
        time_text(notice.created_at),
        time_text(notice.sent_at),
        notice.status,
        notice.error or notice.receipt or NOT_YET,
    )


def _paged(report: IncidentReport) -> Answer:
    run = _escalation_run(report)
    rows = [
        ((n.recipient, *_delivery(n), str(n.attempts)), run)
        for n in report.notices
        if n.step.startswith("page.")
    ]
    head = ("who", "channel", "when (UTC)", "delivered (UTC)", "status", "receipt or error")
    return _answer(
        2,
        "Who was paged, when, on which channel, with what delivery status",
        (*head, "attempts"),
        rows,
        "nobody was paged",
    )


def _acknowledged(report: IncidentReport) -> Answer:
    acks = [e for e in report.timeline if e.kind == ACK_KIND]
    approvals = [
        e for e in report.timeline if e.kind in APPROVAL_KINDS and e.data.get("approve") is True
    ]
    first = min([*acks, *approvals], key=lambda e: (e.at, e.id), default=None)
    rows: list[tuple[tuple[str, ...], str | None]] = []
    if first is not None:
        who = str(first.data.get("by") or report.incident.acknowledged_by or NOT_YET)
        how = (
            "acknowledged"
            if first.kind == ACK_KIND
            else f"approved failover plan {first.data.get('plan_id', '')} (counts as the "
            "acknowledgement: nobody acknowledged before)"
        )
        after = duration_text(first.at - report.incident.opened_at)
        rows.append(
            ((who, time_text(first.at), after, how), first.flow_run_id or _escalation_run(report))
        )
    head = ("who", "when (UTC)", "after the declaration", "how")
    return _answer(3, "Who acknowledged, and when", head, rows, "nobody acknowledged")


def _public(report: IncidentReport) -> Answer:
    run = _escalation_run(report)
    rows = [((n.step, *_delivery(n)), run) for n in report.notices if n.step.startswith("public-")]
    head = ("post", "channel", "when (UTC)", "posted (UTC)", "status", "receipt or error")
    return _answer(
        4, "What was posted publicly, and when", head, rows, "nothing was posted publicly"
    )


def _affected(report: IncidentReport) -> Answer:
    start = report.first_failure_at or report.detected_at
    back = _first(report.timeline, "probe-recovered")
    run = back.flow_run_id if back else report.incident.flow_run_id
    rows = [
        (
            (
                i.client_id,
                i.name,
                time_text(start),
                time_text(start + i.outage) if i.outage is not None else "still out",
                duration_text(i.outage) if i.outage is not None else "ongoing",
            ),
            run,
        )
        for i in report.impact
    ]
    head = ("client", "name", "out from (UTC)", "answering again (UTC)", "outage")
    return _answer(
        5,
        "Which clients were affected, and for how long",
        head,
        rows,
        "no client named in the scope",
    )


def _steps(report: IncidentReport) -> Answer:
    rto = {r.client_id: duration_text(r.rto) for r in report.recoveries}
    rows = [
        (
            (
                s.client_id,
                s.step,
                s.state,
                time_text(s.started_at),
                duration_text(s.finished_at - s.started_at)
                if s.started_at is not None and s.finished_at is not None
                else NOT_YET,
                rto.get(s.client_id, NOT_YET),
            ),
            s.flow_run_id,
        )
        for s in report.failover_steps
    ]
    head = ("client", "step", "state", "started (UTC)", "took", "client's RTO")
    return _answer(
        6, "Every failover step per client, with its RTO", head, rows, "no client was failed over"
    )


def _writes_lost(report: IncidentReport) -> Answer:
    results = {r.client_id: r for r in report.recoveries}
    rows = []
    for impact in report.impact:
        result = results.get(impact.client_id)
        measured = result is not None and result.lost_writes is not None
        text = str(result.lost_writes) if measured and result is not None else UNKNOWN
        how = "measured from the workload log" if measured else "not measured"
        rows.append(((impact.client_id, text, how), result.flow_run_id if result else None))
    head = ("client", "acknowledged writes lost", "how known")
    return _answer(
        7, "Acknowledged writes lost per client", head, rows, "no client named in the scope"
    )


def _readiness(
    report: IncidentReport,
    snapshots: Mapping[str, Snapshot | None],
    drills: Mapping[str, Drill | None],
) -> Answer:
    rows: list[tuple[tuple[str, ...], str | None]] = []
    for impact in report.impact:
        client = impact.client_id
        snap, drill = snapshots.get(client), drills.get(client)
        snap_detail = (
            f"{snap.snapshot_id} on {snap.mirror_id}, verified {time_text(snap.verified_at)}"
            if snap
            else NONE_BEFORE
        )
        drill_detail = (
            f"{'passed' if drill.ok else 'FAILED'}: "
            f"RTO {duration_text(timedelta(seconds=drill.restore_seconds))}, "
            f"RPO {duration_text(timedelta(seconds=drill.snapshot_age_seconds))}"
            if drill
            else NONE_BEFORE
        )
        rows += [
            (
                (
                    client,
                    "last verified snapshot",
                    time_text(snap.taken_at if snap else None),
                    snap_detail,
                ),
                snap.flow_run_id if snap else None,
            ),
            (
                (
                    client,
                    "last DR drill",
                    time_text(drill.started_at if drill else None),
                    drill_detail,
                ),
                drill.flow_run_id if drill else None,
            ),
        ]
    head = ("client", "what", "when (UTC)", "detail")
    return _answer(
        8,
        "Last verified snapshot and last DR drill of each client before the fault",
        head,
        rows,
        "no client named in the scope",
    )


def answer_questions(
    report: IncidentReport,
    *,
    snapshots: Mapping[str, Snapshot | None] | None = None,
    drills: Mapping[str, Drill | None] | None = None,
    ui_url: str | None = None,
) -> IncidentAnswers:
    """The eight answers from *report*; *snapshots* and *drills* (client id -> the last
    verified snapshot / drill before the fault) from the catalogue."""
    return IncidentAnswers(
        (
            _declaration(report),
            _paged(report),
            _acknowledged(report),
            _public(report),
            _affected(report),
            _steps(report),
            _writes_lost(report),
            _readiness(report, snapshots or {}, drills or {}),
        ),
        ui_url,
    )


def last_before(fault: datetime, snapshots: Iterable[Snapshot]) -> Snapshot | None:
    """The newest snapshot taken before *fault* and verified complete (before it too)."""
    verified = [
        s
        for s in snapshots
        if s.status == "complete"
        and s.verified_at is not None
        and s.verified_at <= fault
        and s.taken_at <= fault
    ]
    return max(verified, key=lambda s: (s.taken_at, s.id), default=None)


def last_drill_before(fault: datetime, drills: Iterable[Drill]) -> Drill | None:
    """The newest drill that finished before *fault*."""
    return max(
        (d for d in drills if d.finished_at <= fault),
        key=lambda d: (d.started_at, d.id),
        default=None,
    )


def answers_for_incident(
    store: Store, report: IncidentReport, ui_url: str | None = None
) -> IncidentAnswers:
    """:func:`answer_questions` with each affected client's catalogue rows from *store*."""
    fault = report.first_failure_at or report.detected_at
    clients = [i.client_id for i in report.impact]
    return answer_questions(
        report,
        snapshots={c: last_before(fault, store.snapshots(c)) for c in clients},
        drills={c: last_drill_before(fault, store.drills(c)) for c in clients},
        ui_url=ui_url,
    )


def _run_md(answers: IncidentAnswers, run: str | None) -> str:
    link = answers.link(run)
    if link:
        return f"[{md(run)}]({link})"
    return f"`{md(run)}`" if run else NOT_YET


def answers_markdown(answers: IncidentAnswers) -> str:
    """The answers as a Markdown section (appended to the report)."""
    lines = ["", "## The eight questions", ""]
    for a in answers.answers:
        lines += [f"### {a.number}. {md(a.question)}", ""]
        if not a.rows:
            lines += [f"_{md(a.none)}_", ""]
            continue
        lines += ["| " + " | ".join(md(h) for h in a.head) + " |", "|" + "---|" * len(a.head)]
        lines += [
            "| " + " | ".join([*(md(c) for c in row), _run_md(answers, run)]) + " |"
            for row, run in zip(a.rows, a.runs, strict=True)
        ]
        lines.append("")
    return "\n".join(lines)


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def _run_html(answers: IncidentAnswers, run: str | None) -> str:
    link = answers.link(run)
    if link:
        return f'<a class="run" href="{_h(link)}">{_h(run)}</a>'
    return _h(run or NOT_YET)


def answers_html(answers: IncidentAnswers) -> str:
    """The answers as an HTML section; every value escaped."""
    parts = ["<h2>The eight questions</h2>"]
    for a in answers.answers:
        parts.append(f'<h3 id="q{a.number}">{a.number}. {_h(a.question)}</h3>')
        if not a.rows:
            parts.append(f"<p><em>{_h(a.none)}</em></p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{_h(h)}</th>" for h in a.head) + "</tr>")
        parts += [
            "<tr>"
            + "".join(f"<td>{_h(c)}</td>" for c in row)
            + f"<td>{_run_html(answers, run)}</td></tr>"
            for row, run in zip(a.rows, a.runs, strict=True)
        ]
        parts.append("</table>")
    return "\n".join(parts)
