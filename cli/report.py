"""``ppo-dr report fleet``: the fleet and SLA report of a period, as one HTML file.

Reads only the store and the fleet file; charts are drawn with matplotlib, imported
when the command runs (``ppo-dr --help`` stays quick).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from cli.support import FleetOption, command_group, open_store, reports_errors
from ppo_dr import config
from ppo_dr.errors import PermanentError

report_app = command_group("Reports: the fleet and SLA report.")


def parse_when(text: str, option: str, *, end_of_day: bool = False) -> datetime:
    """``2026-11-01`` (midnight UTC; the next midnight with *end_of_day*) or an ISO time
    (UTC unless it says otherwise); anything else is a clear error."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + timedelta(days=1) if end_of_day else start
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise PermanentError(
            f"{option} {text!r}: give a date (2026-11-01) or an ISO time (2026-11-01T06:00Z)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@report_app.command("fleet")
@reports_errors
def report_fleet(
    start: Annotated[str, typer.Option("--from", help="First day (or ISO time), UTC.")],
    end: Annotated[str, typer.Option("--to", help="Last day, included (or ISO time), UTC.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")],
    fleet: FleetOption = None,
) -> None:
    """Availability per client against its target, incidents by kind and cause,
    MTTD/MTTA/MTTR, RPO per mirror against the one-hour promise, mirror traffic, verify
    results, drill RTO/RPO trend, failed notices: tables and charts in one HTML file."""
    from ppo_dr.fleet_sla import fleet_report_for
    from ppo_dr.fleet_sla_html import fleet_report_html
    from ppo_dr.inventory import load_fleet

    begins = parse_when(start, "--from")
    ends = parse_when(end, "--to", end_of_day=True)
    if ends <= begins:
        raise PermanentError(f"--to ({end}) must come after --from ({start})")
    if output.suffix.lower() not in (".html", ".htm"):
        raise PermanentError(f"{output}: the report is HTML; name the file *.html")
    flt = load_fleet(fleet or config.fleet_file())
    with open_store(fleet) as store:
        report = fleet_report_for(store, flt, begins, ends)
    page = fleet_report_html(report)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    typer.echo(
        f"fleet report {begins:%Y-%m-%d %H:%M}Z to {ends:%Y-%m-%d %H:%M}Z written to {output}"
    )
