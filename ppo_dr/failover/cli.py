"""``ppo-dr failover ...``: plan a failover or planned migration for approval (no Prefect).

``plan`` reads the fleet file, the placements and the snapshot catalogue from the state
store, runs the pure planner and prints the plan; ``-o`` writes it as JSON, which is
what gets approved and run. Commands that start or resume runs (``run``, ``approve``)
need the Prefect API and are added to :data:`failover_app` outside this package.

Exit codes: 0 a plan that moves every client of the scope; 2 the plan refuses some
client (printed, with the reason to escalate), or the request is wrong (one line).
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

from ppo_dr import config
from ppo_dr.cli_support import FleetOption, fail, reports_errors
from ppo_dr.errors import PermanentError

if TYPE_CHECKING:
    from ppo_dr.failover.plan import FleetState, Mode, Plan
    from ppo_dr.inventory import Fleet

failover_app = typer.Typer(
    help="Failover and planned migration: plan (then approve and run).", no_args_is_help=True
)

# Providers that can make a new app server on demand; `static` only has its spares.
PROVISIONING_PROVIDERS: Final = frozenset({"lab", "aws"})


def _ids(value: str | None, what: str) -> tuple[str, ...]:
    """A comma-separated list of ids ('a,b'); each is checked by the planner."""
    if value is None:
        return ()
    ids = tuple(part.strip() for part in value.split(","))
    if not all(ids):
        raise PermanentError(f"{what} {value!r}: empty item in the comma-separated list")
    return ids


def fleet_state(fleet_file: Path | None, down: tuple[str, ...], now: datetime) -> FleetState:
    """What the planner needs, read from the fleet file and the state store.

    Placements come from the store (the truth); a client it has never placed is on its
    fleet.yaml server. A snapshot counts as verified when its last verification found
    it complete. Provisionable DCs are those whose provider is lab or aws.
    """
    from ppo_dr.cli import store_url_for
    from ppo_dr.failover.plan import FleetState, SnapshotInfo
    from ppo_dr.inventory import load_fleet
    from ppo_dr.store import Store

    path = Path(fleet_file) if fleet_file else config.fleet_file()
    fleet: Fleet = load_fleet(path)
    with Store.open(store_url_for(path)) as store:
        placements = {p.client_id: p.server_id for p in store.placements()}
        snapshots = [
            SnapshotInfo(
                client_id=s.client_id,
                mirror_id=s.mirror_id,
                snapshot_id=s.snapshot_id,
                taken_at=s.taken_at,
                verified=s.status == "complete" and s.verified_at is not None,
                size_bytes=s.bytes,
            )
            for s in store.snapshots()
        ]
    return FleetState(
        fleet=fleet,
        placements=placements,
        snapshots=snapshots,
        now=now,
        down=frozenset(down),
        provisionable=frozenset(
            dc.id for dc in fleet.data_centres if dc.provider in PROVISIONING_PROVIDERS
        ),
    )


def write_plan(plan: Plan, path: Path) -> None:
    """Write the plan's JSON to *path* atomically (a reader never sees half a plan)."""
    path = Path(path)
    if path.is_dir():
        raise PermanentError(f"cannot write the plan to {path}: it is a directory")
    directory = path.parent if str(path.parent) else Path()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise PermanentError(f"cannot write the plan to {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(plan.to_json())
        Path(tmp).replace(path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise PermanentError(f"cannot write the plan to {path}: {exc.strerror}") from None


@failover_app.command("plan")
@reports_errors
def failover_plan(
    clients: Annotated[
        str | None, typer.Option("--clients", "-c", help="Clients to move: a,b,c.")
    ] = None,
    server: Annotated[
        str | None, typer.Option("--server", "-s", help="Move every client on this server.")
    ] = None,
    dc: Annotated[
        str | None, typer.Option("--dc", help="Move every client in this data centre.")
    ] = None,
    to_server: Annotated[
        str | None, typer.Option("--to-server", help="Only to this server.")
    ] = None,
    to_dc: Annotated[
        str | None, typer.Option("--to-dc", help="Only to servers in this data centre.")
    ] = None,
    to_country: Annotated[
        str | None, typer.Option("--to-country", help="Only to this country (e.g. GB).")
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            "-m",
            help="emergency: restore from mirrors; planned: freeze, final sync, no loss.",
        ),
    ] = "emergency",
    fleet: FleetOption = None,
    down: Annotated[
        str | None,
        typer.Option("--down", help="Servers to treat as lost or unreachable: s1,s2."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the plan as JSON here (for approval)."),
    ] = None,
) -> None:
    """Plan moving a scope of clients; print it; exit 2 if any client is refused.

    Name exactly one scope (--clients, --server or --dc) and at most one target
    (--to-server, --to-dc or --to-country; none = automatic). Nothing is changed.
    """
    from ppo_dr.failover.plan import MODES, PlanError, Scope, Target, plan_failover

    if mode not in MODES:
        raise PlanError(f"--mode {mode!r} unknown: use one of {', '.join(MODES)}")
    named = [o for o, v in (("--clients", clients), ("--server", server), ("--dc", dc)) if v]
    if len(named) != 1:
        raise PlanError(
            "name exactly one scope: --clients, --server or --dc"
            + (f" (got {', '.join(named)})" if named else "")
        )
    scope = Scope(clients=_ids(clients, "--clients"), server=server, dc=dc)
    target = Target(server=to_server, dc=to_dc, country=to_country)
    state = fleet_state(fleet, _ids(down, "--down"), datetime.now(UTC))
    plan = plan_failover(state, scope, target, _mode(mode))
    typer.echo(plan.render())
    if output is not None:
        write_plan(plan, output)
        typer.echo(f"\nplan written to {output}")
    if plan.refusals:
        raise fail(
            f"{len(plan.refusals)} client(s) refused: see above; escalate or change the target"
        )


def _mode(value: str) -> Mode:
    return "planned" if value == "planned" else "emergency"
