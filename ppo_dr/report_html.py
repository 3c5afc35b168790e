"""The incident report as a standalone HTML page (``ppo-dr incident report -o x.html``).

Renders the :class:`~ppo_dr.reports.IncidentReport` that the Markdown rendering reads
too, with the same rows; every value that came from outside is HTML-escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Final

from ppo_dr.report_answers import IncidentAnswers, answers_html
from ppo_dr.reports import (
    NOT_YET,
    RECOVERY_HEAD,
    STEP_HEAD,
    IncidentReport,
    duration_text,
    recovered_cells,
    recovery_rows,
    step_rows,
    time_text,
)


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_block(text: str | None) -> str:
    if not text or not text.strip():
        return "<p><em>not recorded yet</em></p>"
    return "".join(f"<p>{_h(p.strip())}</p>" for p in text.strip().split("\n\n"))


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{_h(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in rows]
    out.append("</table>")
    return "\n".join(out)


_CSS: Final = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;"
    "padding:.25rem .5rem;text-align:left;vertical-align:top}th{background:#f4f4f4}"
)


def _recovery_html(report: IncidentReport) -> list[str]:
    if not report.recoveries:
        return []
    parts = [
        "<h2>Recovery per client (failover)</h2>",
        "<p>RPO: age of the restored snapshot at the declaration. RTO: declaration to "
        "healthy through the front door.</p>",
        _table(RECOVERY_HEAD, recovery_rows(report)),
        "<h2>Data lost</h2>",
        "<ul>",
        *(
            f"<li><strong>{_h(r.client_id)}</strong> ({_h(r.name)}): {_h(r.data_lost())}</li>"
            for r in report.recoveries
        ),
        "</ul>",
    ]
    if report.failover_steps:
        parts += ["<h3>Failover steps</h3>", _table(STEP_HEAD, step_rows(report))]
    return parts


def report_html(report: IncidentReport, answers: IncidentAnswers | None = None) -> str:
    """The report as a standalone HTML page, with the eight *answers* when given; every
    value is escaped."""
    inc = report.incident
    title = f"Incident {inc.id}: {inc.title}"
    times = [
        ("first failure", time_text(report.first_failure_at), ""),
        (
            "detected (opened)",
            time_text(report.detected_at),
            f"{duration_text(report.time_to_detect)} to detect",
        ),
        (
            "acknowledged",
            time_text(inc.acknowledged_at),
            f"{duration_text(report.time_to_ack)} to acknowledge"
            + (f" by {inc.acknowledged_by}" if inc.acknowledged_by else ""),
        ),
        ("recovered", *recovered_cells(report)),
        (
            "resolved",
            time_text(inc.resolved_at),
            f"{duration_text(report.time_to_resolve)} to resolve"
            + (f" by {inc.resolved_by}" if inc.resolved_by else ""),
        ),
    ]
    impact = [
        (
            r.client_id,
            r.name,
            duration_text(r.outage) if r.outage is not None else "ongoing",
            r.contacts_emailed,
        )
        for r in report.impact
    ]
    timeline = [
        (time_text(e.at), e.kind, e.message, e.flow_run_id or NOT_YET) for e in report.timeline
    ]
    notices = [
        (
            time_text(n.created_at),
            n.step,
            n.channel,
            n.recipient,
            n.status,
            n.error or n.receipt or NOT_YET,
        )
        for n in report.notices
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_h(title)}</h1>",
        f"<p><strong>State:</strong> {_h(inc.state)} · <strong>kind:</strong> {_h(inc.kind)}"
        f" · <strong>severity:</strong> {_h(inc.severity)}</p>",
        "<h2>Times</h2>",
        _table(("", "at", "after"), times),
        "<h2>Scope and impact</h2>",
        _table(("client", "name", "outage", "contacts e-mailed"), impact)
        if impact
        else "<p>No client named in the incident's scope.</p>",
        *_recovery_html(report),
        *([answers_html(answers)] if answers is not None else []),
        "<h2>Cause</h2>",
        _html_block(inc.cause),
        "<h2>Measures taken</h2>",
        _html_block(inc.measures),
        "<h2>Prevention</h2>",
        _html_block(inc.prevention),
        "<h2>Timeline</h2>",
        _table(("at (UTC)", "what", "message", "flow run"), timeline),
        "<h2>Notices sent</h2>",
        _table(("created (UTC)", "step", "channel", "to", "status", "receipt or error"), notices),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
