"""``ppo-dr maintenance``: planned work on a server, DC or client, so nobody is paged.

While a window is in force the probe still records outages in its scope (paging off,
``suppressed by maintenance window N`` on the timeline) but starts no escalation.
Windows live in the state store; no Prefect needed.

Exit codes: 0 done; 2 error (unknown id, bad duration, no such window).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from cli.support import FleetOption, command_group, fail, open_store, reports_errors
from ppo_dr.errors import PermanentError

maintenance_app = command_group(
    "Maintenance windows (server, DC or client): the probe records, but does not page."
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_for(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d`` or a combination (``1h30m``) → a timedelta."""
    parts = re.findall(r"(\d+)\s*([smhd])", text.strip().lower())
    if not parts or re.sub(r"\s*\d+\s*[smhd]\s*", "", text.strip().lower()):
        raise PermanentError(f"--for {text!r} is not a duration like '90m', '2h' or '1h30m'")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise PermanentError("--for must be longer than 0")
    return timedelta(seconds=seconds)


def _check_known(fleet_file: Path | None, kind: str, scope_id: str) -> None:
    """Refuse an id the fleet file does not know (a typo must not silence nothing)."""
    from ppo_dr import config
    from ppo_dr.inventory import load_fleet

    path = fleet_file or config.fleet_file()
    if not path.exists():
        return
    fleet = load_fleet(path)
    known = {
        "server": {s.id for s in fleet.servers},
        "dc": {s.dc for s in fleet.servers},
        "client": {c.id for c in fleet.clients},
    }[kind]
    if scope_id not in known:
        raise PermanentError(f"{kind} {scope_id!r} is not in {path}: known {sorted(known)}")


@maintenance_app.command("start")
@reports_errors
def maintenance_start(
    server: Annotated[str | None, typer.Option("--server", help="An app server id.")] = None,
    dc: Annotated[str | None, typer.Option("--dc", help="A data centre id.")] = None,
    client: Annotated[str | None, typer.Option("--client", help="A client id.")] = None,
    for_: Annotated[
        str | None,
        typer.Option("--for", help="How long, e.g. 2h or 90m (default: until 'end')."),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (shown on incidents).")] = "",
    by: Annotated[str, typer.Option("--by", help="Who is doing the work.")] = "",
    fleet: FleetOption = None,
) -> None:
    """Open a window on exactly one of --server, --dc or --client; print its id."""
    given = [(k, v) for k, v in (("server", server), ("dc", dc), ("client", client)) if v]
    if len(given) != 1:
        raise fail("error: give exactly one of --server, --dc or --client")
    kind, scope_id = given[0]
    assert scope_id is not None
    _check_known(fleet, kind, scope_id)
    now = datetime.now(UTC)
    ends = now + parse_for(for_) if for_ else None
    with open_store(fleet) as store:
        window = store.start_maintenance(
            kind, scope_id, reason=reason, created_by=by, starts_at=now, ends_at=ends
        )
    until = f"until {window.ends_at:%Y-%m-%d %H:%M:%SZ}" if window.ends_at else "until ended"
    typer.echo(f"maintenance window {window.id}: {kind} {scope_id}, {until}")


@maintenance_app.command("end")
@reports_errors
def maintenance_end(
    window_id: Annotated[int, typer.Argument(help="The window id (see 'ls').")],
    fleet: FleetOption = None,
) -> None:
    """End window ID now (paging resumes for its scope)."""
    with open_store(fleet) as store:
        window = store.end_maintenance(window_id)
    typer.echo(
        f"maintenance window {window.id} ({window.scope_kind} {window.scope_id}) "
        f"ended at {window.ends_at:%Y-%m-%d %H:%M:%SZ}"
    )


@maintenance_app.command("ls")
@reports_errors
def maintenance_ls(fleet: FleetOption = None) -> None:
    """The windows in force now."""
    with open_store(fleet) as store:
        windows = store.active_maintenance()
    if not windows:
        typer.echo("no maintenance window in force")
        return
    typer.echo(f"{'id':>4}  {'scope':<8} {'subject':<24} {'since':<20} {'until':<20} reason")
    for w in windows:
        until = f"{w.ends_at:%Y-%m-%d %H:%M:%SZ}" if w.ends_at else "(until ended)"
        typer.echo(
            f"{w.id:>4}  {w.scope_kind:<8} {w.scope_id:<24} "
            f"{w.starts_at:%Y-%m-%d %H:%M:%SZ}  {until:<20} {w.reason}"
        )
