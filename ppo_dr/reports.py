"""The incident report: what happened, how fast we saw it, who was told, what we changed.

Pure: built from what the store holds (the incident, its timeline, its notices) and,
optionally, the fleet's client names. Two renderings of one :class:`IncidentReport`:

* :func:`report_markdown` -- for ``ppo-dr incident report`` and the Prefect markdown
  artifact the escalation flow publishes when it ends;
* :func:`report_html` -- a standalone page (``-o report.html``).

Everything that came from outside (titles, notes, cause, client names, error texts)
is escaped: Markdown punctuation and HTML in the Markdown (Prefect's UI renders both),
HTML entities in the HTML. Notice bodies are never included: what people were told is
in the store, and a report is shared more widely than the store.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from ppo_dr.store import Incident, Notice, TimelineEntry

NOT_YET: Final = "-"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~])")


@dataclass(frozen=True, slots=True)
class ClientImpact:
    """One affected client: how long its service was out and who of it was told."""

    client_id: str
    name: str
    outage: timedelta | None  # None while still out
    contacts_emailed: int


@dataclass(frozen=True, slots=True)
class IncidentReport:
    """Everything a report shows, computed once (both renderings read this)."""

    incident: Incident
    timeline: tuple[TimelineEntry, ...]
    notices: tuple[Notice, ...]
    impact: tuple[ClientImpact, ...]
    detected_at: datetime
    first_failure_at: datetime | None
    time_to_detect: timedelta | None
    time_to_ack: timedelta | None
    time_to_recover: timedelta | None
    time_to_resolve: timedelta | None
    flow_runs: tuple[str, ...]


def build_report(
    incident: Incident,
    timeline: Iterable[TimelineEntry],
    notices: Iterable[Notice],
    *,
    client_names: Mapping[str, str] | None = None,
    client_contacts: Mapping[str, Sequence[str]] | None = None,
) -> IncidentReport:
    """The report of *incident*; *client_names* and *client_contacts* (client id ->
    e-mail addresses) come from the fleet when it is at hand."""
    entries = tuple(timeline)
    sent = tuple(notices)
    opened = incident.opened_at
    first_failure = _first_failure(incident, entries)
    ended = incident.recovered_at or incident.resolved_at
    emailed = {n.recipient.lower() for n in sent if n.step == "clients" and n.status == "sent"}
    names = client_names or {}
    contacts = client_contacts or {}
    impact = tuple(
        ClientImpact(
            client_id=client,
            name=names.get(client, client),
            outage=(ended - (first_failure or opened)) if ended else None,
            contacts_emailed=sum(1 for e in contacts.get(client, ()) if e.lower() in emailed),
        )
        for client in (incident.scope or {}).get("clients", ())
    )
    runs = tuple(dict.fromkeys(e.flow_run_id for e in entries if e.flow_run_id))
    return IncidentReport(
        incident=incident,
        timeline=entries,
        notices=sent,
        impact=impact,
        detected_at=opened,
        first_failure_at=first_failure,
        time_to_detect=(opened - first_failure) if first_failure else None,
        time_to_ack=_since(opened, incident.acknowledged_at),
        time_to_recover=_since(first_failure or opened, incident.recovered_at),
        time_to_resolve=_since(opened, incident.resolved_at),
        flow_runs=runs,
    )


def _first_failure(incident: Incident, timeline: Sequence[TimelineEntry]) -> datetime | None:
    """When the trouble began, if the probe said so (timeline ``first-failure`` or scope)."""
    for entry in timeline:
        if entry.kind == "first-failure":
            return entry.at
    raw = (incident.scope or {}).get("first_failure")
    if isinstance(raw, str):
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            return None
        return value if value.tzinfo is not None else None
    return None


def _since(start: datetime, end: datetime | None) -> timedelta | None:
    return None if end is None else end - start


def duration_text(value: timedelta | None) -> str:
    """``1h 02m 05s``, ``3m 10s``, ``42s``; ``-`` for not (yet) known."""
    if value is None:
        return NOT_YET
    seconds = max(0, round(value.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def time_text(value: datetime | None) -> str:
    """``2026-11-30 07:41:05Z`` or ``-``."""
    return NOT_YET if value is None else f"{value:%Y-%m-%d %H:%M:%S}Z"


def notice_counts(notices: Iterable[Notice]) -> dict[str, int]:
    """How many notices ended in each status."""
    counts: dict[str, int] = {}
    for notice in notices:
        counts[notice.status] = counts.get(notice.status, 0) + 1
    return counts


# --------------------------------------------------------------------------- Markdown


def md(text: object) -> str:
    """*text* safe inside Markdown (and a table cell): punctuation escaped, HTML quoted,
    line breaks folded."""
    flat = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))


def _md_block(text: str | None) -> str:
    if not text or not text.strip():
        return "_not recorded yet (`ppo-dr incident annotate`)_"
    return "\n".join(md(line) if line.strip() else "" for line in text.strip().splitlines())


def report_markdown(report: IncidentReport) -> str:
    """The report as Markdown (also the Prefect artifact)."""
    inc = report.incident
    scope = inc.scope or {}
    lines = [
        f"# Incident {inc.id}: {md(inc.title)}",
        "",
        f"**State:** {md(inc.state)} · **kind:** {md(inc.kind)} · **severity:** {md(inc.severity)}",
        "",
        "## Times",
        "",
        "| | at | after |",
        "|---|---|---|",
        f"| first failure | {time_text(report.first_failure_at)} | |",
        f"| detected (opened) | {time_text(report.detected_at)} | "
        f"{duration_text(report.time_to_detect)} to detect |",
        f"| acknowledged | {time_text(inc.acknowledged_at)} | "
        f"{duration_text(report.time_to_ack)} to acknowledge"
        f"{' by ' + md(inc.acknowledged_by) if inc.acknowledged_by else ''} |",
        f"| recovered | {time_text(inc.recovered_at)} | "
        f"{duration_text(report.time_to_recover)} of outage |",
        f"| resolved | {time_text(inc.resolved_at)} | "
        f"{duration_text(report.time_to_resolve)} to resolve"
        f"{' by ' + md(inc.resolved_by) if inc.resolved_by else ''} |",
        "",
        "## Scope and impact",
        "",
    ]
    for name in ("dc", "server", "client"):
        if scope.get(name):
            lines.append(f"- {name}: {md(scope[name])}")
    if report.impact:
        lines += ["", "| client | name | outage | contacts e-mailed |", "|---|---|---|---|"]
        for row in report.impact:
            outage = duration_text(row.outage) if row.outage is not None else "ongoing"
            lines.append(
                f"| {md(row.client_id)} | {md(row.name)} | {outage} | {row.contacts_emailed} |"
            )
    else:
        lines.append("No client named in the incident's scope.")
    lines += [
        "",
        "## Cause",
        "",
        _md_block(inc.cause),
        "",
        "## Measures taken",
        "",
        _md_block(inc.measures),
        "",
        "## Prevention",
        "",
        _md_block(inc.prevention),
        "",
        "## Timeline",
        "",
        "| at (UTC) | what | message | flow run |",
        "|---|---|---|---|",
    ]
    for entry in report.timeline:
        lines.append(
            f"| {time_text(entry.at)} | {md(entry.kind)} | {md(entry.message)} | "
            f"{md(entry.flow_run_id) if entry.flow_run_id else NOT_YET} |"
        )
    counts = notice_counts(report.notices)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    lines += [
        "",
        f"## Notices sent ({summary})",
        "",
        "| created (UTC) | step | channel | to | status | receipt or error |",
        "|---|---|---|---|---|---|",
    ]
    for notice in report.notices:
        lines.append(
            f"| {time_text(notice.created_at)} | {md(notice.step)} | {md(notice.channel)} | "
            f"{md(notice.recipient)} | {md(notice.status)} | "
            f"{md(notice.error or notice.receipt or NOT_YET)} |"
        )
    if report.flow_runs:
        lines += ["", "Flow runs: " + ", ".join(f"`{md(r)}`" for r in report.flow_runs)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTML


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


def report_html(report: IncidentReport) -> str:
    """The report as a standalone HTML page; every value is escaped."""
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
        (
            "recovered",
            time_text(inc.recovered_at),
            f"{duration_text(report.time_to_recover)} of outage",
        ),
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


__all__ = [
    "ClientImpact",
    "IncidentReport",
    "build_report",
    "duration_text",
    "md",
    "notice_counts",
    "report_html",
    "report_markdown",
    "time_text",
]
