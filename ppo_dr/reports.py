"""The incident report: what happened, how fast we saw it, who was told, what we changed,
and -- when clients were failed over -- what each client's recovery cost.

Pure: built from what the store holds (the incident, its timeline, its notices, the
ledger of its failovers) and, optionally, the fleet's client names;
:func:`report_for_incident` reads all of it from a store. Per client moved by a
failover of the incident: from/to server, mirror and snapshot restored, RPO (age of the
snapshot at the declaration), RTO (declaration to healthy through the front door),
acknowledged writes lost (measured in the lab) and the result, with the ledger's steps
and their flow-run ids; "Data lost" says in plain words what each client lost.
Two renderings of one :class:`IncidentReport`:

* :func:`report_markdown` -- for ``ppo-dr incident report`` and the Prefect markdown
  artifact the escalation flow publishes when it ends;
* :func:`ppo_dr.report_html.report_html` -- a standalone page (``-o report.html``).

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
from typing import TYPE_CHECKING, Final

from ppo_dr.client_outage import clients_back, healthy_after_failover
from ppo_dr.errors import PermanentError
from ppo_dr.probe.graph import client_target
from ppo_dr.store import FailoverResult, FailoverStep, Incident, Notice, TimelineEntry

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet
    from ppo_dr.store import Store

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
class ClientRecovery:
    """One client a failover of the incident moved (or tried to): the evidence.

    ``rpo`` is the age of the restored snapshot at the declaration (what could be
    lost); ``rto`` the time from the declaration to healthy through the front door;
    ``lost_writes`` the acknowledged writes missing after the move (lab: from the
    workload's log; None where nothing measures it).
    """

    client_id: str
    name: str
    plan_id: str
    from_server: str
    to_server: str
    source_mirror: str | None
    snapshot_id: str | None
    rpo: timedelta | None
    rto: timedelta | None
    lost_writes: int | None
    outcome: str  # ok | rolled-back
    detail: str
    flow_run_id: str | None

    @property
    def moved(self) -> bool:
        """True when the client serves from its new server."""
        return self.outcome == "ok"

    def data_lost(self) -> str:
        """What the client lost, in a sentence an account manager can forward."""
        window = duration_text(self.rpo) if self.rpo is not None else None
        if not self.moved:
            return (
                "not failed over (the attempt was rolled back: no data changed); "
                "its data is still on the lost server"
            )
        if self.lost_writes is None:
            return (
                f"not measured; at most the writes of the last {window} before the "
                "declaration (the restored snapshot's age)"
                if window
                else "not measured"
            )
        if self.lost_writes == 0:
            return "nothing: no acknowledged write lost" + (
                f" (restored snapshot {window} old)" if window else ""
            )
        return f"{self.lost_writes} acknowledged write(s) lost" + (
            f": made after the restored snapshot ({window} old at the declaration)"
            if window
            else ""
        )


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
    recoveries: tuple[ClientRecovery, ...] = ()
    failover_steps: tuple[FailoverStep, ...] = ()
    #: The incident's recovery, else when its last client answered again (its server
    #: may stay down after a failover; the service is back): None while any is out.
    service_back_at: datetime | None = None


def build_report(
    incident: Incident,
    timeline: Iterable[TimelineEntry],
    notices: Iterable[Notice],
    *,
    client_names: Mapping[str, str] | None = None,
    client_contacts: Mapping[str, Sequence[str]] | None = None,
    failover_results: Iterable[FailoverResult] = (),
    failover_steps: Iterable[FailoverStep] = (),
    clients_back: Mapping[str, datetime] | None = None,
) -> IncidentReport:
    """The report of *incident*; *client_names* and *client_contacts* (client id ->
    e-mail addresses) come from the fleet when it is at hand; *failover_results* and
    *failover_steps* from the ledger of the incident's failovers; *clients_back* (client
    id -> when it answered again, :mod:`ppo_dr.client_outage`) ends each client's
    outage there instead of at the incident's recovery or resolution."""
    entries = tuple(timeline)
    sent = tuple(notices)
    opened = incident.opened_at
    first_failure = _first_failure(incident, entries)
    ended = incident.recovered_at or incident.resolved_at
    emailed = {n.recipient.lower() for n in sent if n.step == "clients" and n.status == "sent"}
    names = client_names or {}
    contacts = client_contacts or {}
    back = clients_back or {}
    clients = list((incident.scope or {}).get("clients", ()))
    start = first_failure or opened
    impact = tuple(
        ClientImpact(
            client_id=client,
            name=names.get(client, client),
            outage=_since(start, back.get(client) or ended),
            contacts_emailed=sum(1 for e in contacts.get(client, ()) if e.lower() in emailed),
        )
        for client in clients
    )
    service_back = incident.recovered_at
    if service_back is None and clients and all(c in back for c in clients):
        service_back = max(back[c] for c in clients)
    recoveries = tuple(
        ClientRecovery(
            client_id=r.client_id,
            name=names.get(r.client_id, r.client_id),
            plan_id=r.plan_id,
            from_server=r.from_server,
            to_server=r.to_server,
            source_mirror=r.source_mirror,
            snapshot_id=r.snapshot_id,
            rpo=_seconds(r.rpo_seconds),
            rto=_seconds(r.rto_seconds),
            lost_writes=r.lost_writes,
            outcome=r.outcome,
            detail=r.detail,
            flow_run_id=r.flow_run_id,
        )
        for r in sorted(failover_results, key=lambda r: (r.client_id, r.updated_at))
    )
    steps = tuple(sorted(failover_steps, key=lambda s: (s.client_id, s.id)))
    runs = tuple(
        dict.fromkeys(
            [e.flow_run_id for e in entries if e.flow_run_id]
            + [s.flow_run_id for s in steps if s.flow_run_id]
        )
    )
    return IncidentReport(
        incident=incident,
        timeline=entries,
        notices=sent,
        impact=impact,
        detected_at=opened,
        first_failure_at=first_failure,
        time_to_detect=(opened - first_failure) if first_failure else None,
        time_to_ack=_since(opened, incident.acknowledged_at),
        time_to_recover=_since(start, service_back),
        time_to_resolve=_since(opened, incident.resolved_at),
        flow_runs=runs,
        recoveries=recoveries,
        failover_steps=steps,
        service_back_at=service_back,
    )


def report_for_incident(
    store: Store, incident_id: int, fleet: Fleet | None = None
) -> IncidentReport:
    """The report of incident *incident_id* from *store*: timeline, notices and the
    ledger of every failover run for it; names and contacts from *fleet* if given."""
    incident = store.incident(incident_id)
    if incident is None:
        raise PermanentError(f"no incident with id {incident_id}")
    results: list[FailoverResult] = []
    steps: list[FailoverStep] = []
    healthy: dict[str, datetime] = {}
    for failover in reversed(store.failovers(incident_id=incident_id)):
        these = store.failover_results(failover.plan_id)
        results += these
        steps += store.failover_steps(failover.plan_id)
        healthy.update(healthy_after_failover(these, failover.declared_at))
    clients = list((incident.scope or {}).get("clients", ()))
    since = _first_failure(incident, store.timeline(incident_id)) or incident.opened_at
    moves = {
        client_target(c): store.probe_transitions(client_target(c), since=since) for c in clients
    }
    return build_report(
        incident,
        store.timeline(incident_id),
        store.notices(incident_id),
        client_names={c.id: c.name for c in fleet.clients} if fleet else None,
        client_contacts=(
            {c.id: [k.email for k in c.contacts] for c in fleet.clients} if fleet else None
        ),
        failover_results=results,
        failover_steps=steps,
        clients_back=clients_back(clients, moves, healthy),
    )


def _seconds(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


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


def recovered_cells(report: IncidentReport) -> tuple[str, str]:
    """The "recovered" row: when, and how long the outage was (blank while it lasts)."""
    if report.time_to_recover is None:
        return time_text(report.service_back_at), NOT_YET
    after = f"{duration_text(report.time_to_recover)} of outage"
    if report.incident.recovered_at is None:
        after += " (every client answering again)"
    return time_text(report.service_back_at), after


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
        "| recovered | {} | {} |".format(*recovered_cells(report)),
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
    lines += _recovery_markdown(report)
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


def _writes(value: int | None) -> str:
    return "not measured" if value is None else str(value)


def recovery_rows(report: IncidentReport) -> list[tuple[str, ...]]:
    """One row per client failed over: both renderings (and the artifact) show these."""
    return [
        (
            r.client_id,
            r.from_server,
            r.to_server,
            r.source_mirror or NOT_YET,
            r.snapshot_id or NOT_YET,
            duration_text(r.rpo),
            duration_text(r.rto),
            _writes(r.lost_writes),
            "moved" if r.moved else f"rolled back: {r.detail}" if r.detail else "rolled back",
        )
        for r in report.recoveries
    ]


RECOVERY_HEAD: Final = (
    "client",
    "from",
    "to",
    "mirror",
    "snapshot restored",
    "RPO (snapshot age)",
    "RTO",
    "acked writes lost",
    "result",
)
STEP_HEAD: Final = ("client", "step", "state", "started (UTC)", "took", "attempts", "flow run")


def step_rows(report: IncidentReport) -> list[tuple[str, ...]]:
    """The failover ledger's steps, per client, with the flow run that did each."""
    return [
        (
            s.client_id,
            s.step,
            s.state + (f": {s.detail}" if s.detail and s.state != "done" else ""),
            time_text(s.started_at),
            duration_text(s.finished_at - s.started_at)
            if s.started_at is not None and s.finished_at is not None
            else NOT_YET,
            str(s.attempts),
            s.flow_run_id or NOT_YET,
        )
        for s in report.failover_steps
    ]


def _md_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return out


def _recovery_markdown(report: IncidentReport) -> list[str]:
    if not report.recoveries:
        return []
    lines = [
        "",
        "## Recovery per client (failover)",
        "",
        "RPO: age of the restored snapshot at the declaration. RTO: declaration to healthy "
        "through the front door.",
        "",
        *_md_table(RECOVERY_HEAD, recovery_rows(report)),
        "",
        "## Data lost",
        "",
    ]
    lines += [
        f"- **{md(r.client_id)}** ({md(r.name)}): {md(r.data_lost())}" for r in report.recoveries
    ]
    if report.failover_steps:
        lines += ["", "### Failover steps", "", *_md_table(STEP_HEAD, step_rows(report))]
    return lines


__all__ = [
    "NOT_YET",
    "RECOVERY_HEAD",
    "STEP_HEAD",
    "ClientImpact",
    "ClientRecovery",
    "IncidentReport",
    "build_report",
    "duration_text",
    "md",
    "notice_counts",
    "recovered_cells",
    "recovery_rows",
    "report_for_incident",
    "report_markdown",
    "step_rows",
    "time_text",
]
