"""``ppo-dr incident ...``: list, show, acknowledge, resolve, annotate and report incidents.

Everything but ``ack`` reads or writes only the state store. ``ack`` writes the store
first, so it counts even when Prefect cannot be reached: the escalation run reads the
store at its next wake-up (at most ``flows.escalation.RECHECK_S``). Then every paused
run tagged ``incident:<id>`` is resumed with the typed input
(:class:`flows.ack_pause.Ack`), so paging stops at once; the API is found as
:func:`deployments.prefect_api.api_url` says, and Prefect is imported only then.
``resolve`` only writes the store: the escalation run sees it at its next wake-up and
sends the resolved notices.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.support import FleetOption, command_group, open_store, reports_errors, takes_options
from ppo_dr import config
from ppo_dr.errors import PermanentError

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet

incident_app = command_group("Incidents: list, show, acknowledge, resolve, annotate, report.")

IdArgument = Annotated[int, typer.Argument(min=1, help="The incident id (see `incident ls`).")]

#: How long ``ack`` waits for a run that is between two pauses to pause again.
PAUSE_WAIT_S = 6.0


def _fleet(fleet_file: Path | None) -> Fleet | None:
    """The fleet if its file exists (names and contacts in reports), else None."""
    from ppo_dr.inventory import load_fleet

    path = fleet_file or config.fleet_file()
    return load_fleet(path) if path.exists() else None


def _when(value: object) -> str:
    from ppo_dr.reports import time_text

    return time_text(value)  # type: ignore[arg-type]


def _seconds(value: float | None) -> str:
    from datetime import timedelta

    from ppo_dr.reports import duration_text

    return duration_text(None if value is None else timedelta(seconds=value))


@incident_app.command("ls")
@reports_errors
def incident_ls(
    fleet: FleetOption = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Resolved ones too.")] = False,
) -> None:
    """List open incidents (all with --all), oldest first."""
    states = None if all_ else ("open", "acknowledged", "recovered")
    with open_store(fleet) as store:
        rows = store.incidents(states)
    if not rows:
        typer.echo("no incidents" if all_ else "no open incidents (--all for resolved ones)")
        return
    typer.echo(f"{'id':>5}  {'state':<12}  {'opened (UTC)':<20}  {'kind':<12}  title")
    for inc in rows:
        typer.echo(
            f"{inc.id:>5}  {inc.state:<12}  {_when(inc.opened_at):<20}  {inc.kind:<12}  {inc.title}"
        )


@incident_app.command("show")
@reports_errors
def incident_show(incident_id: IdArgument, fleet: FleetOption = None) -> None:
    """State, scope, affected clients, timeline (with flow-run ids) and notices."""
    with open_store(fleet) as store:
        inc = store.incident(incident_id)
        if inc is None:
            raise PermanentError(f"no incident with id {incident_id}")
        timeline = store.timeline(incident_id)
        notices = store.notices(incident_id)
        failovers = [
            (f, store.failover_results(f.plan_id))
            for f in reversed(store.failovers(incident_id=incident_id))
        ]
    scope = inc.scope or {}
    typer.echo(f"incident {inc.id}: {inc.title}")
    typer.echo(f"  state:    {inc.state} ({inc.kind}, {inc.severity})")
    typer.echo(f"  opened:   {_when(inc.opened_at)}")
    if inc.acknowledged_at:
        typer.echo(f"  acked:    {_when(inc.acknowledged_at)} by {inc.acknowledged_by}")
    if inc.recovered_at:
        typer.echo(f"  recovered: {_when(inc.recovered_at)}")
    if inc.resolved_at:
        who = f" by {inc.resolved_by}" if inc.resolved_by else ""
        typer.echo(f"  resolved: {_when(inc.resolved_at)}{who}")
    for name in ("dc", "server", "client"):
        if scope.get(name):
            typer.echo(f"  {name + ':':<9} {scope[name]}")
    clients = scope.get("clients") or []
    typer.echo(f"  clients:  {', '.join(clients) if clients else '-'}")
    typer.echo("timeline:")
    for entry in timeline:
        run = f"  [run {entry.flow_run_id}]" if entry.flow_run_id else ""
        typer.echo(f"  {_when(entry.at)}  {entry.kind:<20} {entry.message}{run}")
    if failovers:
        typer.echo("failovers:")
    for failover, results in failovers:
        typer.echo(
            f"  plan {failover.plan_id} ({failover.mode}): {failover.state}  "
            f"[run {failover.flow_run_id or '-'}]"
        )
        for r in results:
            typer.echo(
                f"    {r.client_id}: {r.from_server} -> {r.to_server}  {r.outcome}  "
                f"RTO {_seconds(r.rto_seconds)}  RPO {_seconds(r.rpo_seconds)}  "
                f"writes lost {'-' if r.lost_writes is None else r.lost_writes}"
            )
    typer.echo(f"notices ({len(notices)}):")
    for n in notices:
        detail = n.error or n.receipt or ""
        typer.echo(
            f"  {_when(n.created_at)}  {n.status:<7} {n.channel:<5} {n.step:<18} "
            f"{n.recipient}  {detail}"
        )


def resume_escalation(incident_id: int, run_input: dict[str, Any]) -> list[tuple[str, str]]:
    """Resume every paused escalation run of the incident with *run_input*.

    Returns ``(run name, outcome)`` pairs; a run between two pauses is waited for
    up to :data:`PAUSE_WAIT_S`. No run found: an empty list.
    """
    from deployments.prefect_api import resume_paused
    from flows.ack_pause import ACKNOWLEDGED

    return resume_paused(
        f"incident:{incident_id}",
        run_input,
        wait_s=PAUSE_WAIT_S,
        every_run=True,
        settled_state=ACKNOWLEDGED,
    )


@incident_app.command("ack")
@reports_errors
def incident_ack(
    incident_id: IdArgument,
    by: Annotated[str, typer.Option("--by", help="Who takes the incident.")],
    note: Annotated[str, typer.Option("--note", help="What you are doing about it.")] = "",
    fleet: FleetOption = None,
) -> None:
    """Acknowledge: record it, and resume the paused escalation run (paging stops)."""
    from deployments.prefect_api import api_url, use_api
    from ppo_dr.incident_acks import record_ack

    with open_store(fleet) as store:
        recorded = record_ack(store, incident_id, by, note, since=datetime.now(UTC))
    typer.echo(f"incident {incident_id} acknowledged by {by}" + ("" if recorded else " (already)"))
    url = api_url()
    if url is None:
        typer.echo("no Prefect API known: the escalation run will see the ack at its next wake-up")
        return
    try:
        with use_api(url):
            outcomes = resume_escalation(incident_id, {"by": by, "note": note})
    except Exception as exc:  # the ack is recorded; the run will see it anyway
        typer.echo(
            f"could not reach the Prefect API ({type(exc).__name__}); the escalation run "
            "will see the ack at its next wake-up"
        )
        return
    if not outcomes:
        typer.echo("no paused escalation run: it will see the ack at its next wake-up")
    for name, outcome in outcomes:
        typer.echo(f"escalation run {name}: resume {outcome}")


@incident_app.command("resolve")
@reports_errors
def incident_resolve(
    incident_id: IdArgument,
    by: Annotated[str, typer.Option("--by", help="Who resolves it.")] = "",
    note: Annotated[str, typer.Option("--note", help="Why it is over.")] = "",
    fleet: FleetOption = None,
) -> None:
    """Resolve the incident; its escalation run sends the resolved notices and ends."""
    with open_store(fleet) as store:
        inc = store.resolve(incident_id, by, note)
    typer.echo(f"incident {inc.id} resolved at {_when(inc.resolved_at)}")


@dataclass(frozen=True)
class PostMortem:
    """The parts of the post-mortem ``annotate`` records; at least one must be given."""

    cause: Annotated[str | None, typer.Option("--cause", help="What caused it.")] = None
    measures: Annotated[
        str | None, typer.Option("--measures", help="What was done to restore service.")
    ] = None
    prevention: Annotated[
        str | None, typer.Option("--prevention", help="What will keep it from happening again.")
    ] = None


@incident_app.command("annotate")
@reports_errors
@takes_options(PostMortem, "found")
def incident_annotate(
    incident_id: IdArgument,
    found: PostMortem,
    fleet: FleetOption = None,
) -> None:
    """Record the post-mortem: cause, measures taken, prevention (any state)."""
    if found == PostMortem():
        raise PermanentError("give at least one of --cause, --measures, --prevention")
    with open_store(fleet) as store:
        store.annotate(incident_id, found.cause, found.measures, found.prevention)
    typer.echo(f"incident {incident_id} annotated")


@incident_app.command("report")
@reports_errors
def incident_report(
    incident_id: IdArgument,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write here (HTML if it ends in .html)."),
    ] = None,
    fleet: FleetOption = None,
) -> None:
    """The incident report: Markdown on stdout, or a file (.html for HTML); with RTO,
    RPO and data lost per client when clients were failed over, and the eight
    questions answered, each with its Prefect run."""
    from deployments.prefect_api import api_url
    from ppo_dr.report_answers import answers_for_incident, answers_markdown
    from ppo_dr.report_html import report_html
    from ppo_dr.reports import report_for_incident, report_markdown
    from ppo_dr.run_links import ui_base

    flt = _fleet(fleet)
    with open_store(fleet) as store:
        report = report_for_incident(store, incident_id, flt)
        answers = answers_for_incident(store, report, ui_base(api_url()))
    markdown = report_markdown(report) + answers_markdown(answers)
    if output is None:
        typer.echo(markdown, nl=False)
        return
    html = output.suffix.lower() in (".html", ".htm")
    text = report_html(report, answers) if html else markdown
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    typer.echo(f"report written to {output}")
