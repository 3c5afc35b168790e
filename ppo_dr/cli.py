"""The ``ppo-dr`` command: the domain commands that need no Prefect API.

Commands that orchestrate (``serve``, ``incident ack`` which resumes a paused run) are
added by :mod:`deployments.cli`, which is the console entry point, so this package
stays free of Prefect. Every command turns a :class:`~ppo_dr.errors.DRError` into a
one-line message and exit code 2: an operator at 3 a.m. never sees a traceback for
something we anticipated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ppo_dr import config
from ppo_dr.cli_support import FleetOption, reports_errors
from ppo_dr.errors import InventoryError
from ppo_dr.failover.cli import failover_app
from ppo_dr.incident_cli import incident_app
from ppo_dr.lab.cli import lab_app
from ppo_dr.maintenance_cli import maintenance_app
from ppo_dr.mirror.cli import mirror_app

app = typer.Typer(
    name="ppo-dr",
    help="Disaster-recovery runbooks for a multi-tenant SaaS fleet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
inventory_app = typer.Typer(help="Check the fleet inventory (fleet.yaml).", no_args_is_help=True)
db_app = typer.Typer(
    help="Manage the state store (placements, incidents, notices).", no_args_is_help=True
)
app.add_typer(inventory_app, name="inventory")
app.add_typer(db_app, name="db")
app.add_typer(lab_app, name="lab")
app.add_typer(mirror_app, name="mirror")
app.add_typer(incident_app, name="incident")
app.add_typer(maintenance_app, name="maintenance")
app.add_typer(failover_app, name="failover")


@inventory_app.command("check")
def inventory_check(
    file: Annotated[Path, typer.Argument(help="The fleet file to check.")],
) -> None:
    """Validate FILE: print a summary and exit 0, or list every violation and exit 2."""
    from ppo_dr.inventory import load_fleet, summary

    try:
        fleet = load_fleet(file)
    except InventoryError as exc:
        typer.echo(f"{exc.file}: {len(exc.violations)} violation(s)", err=True)
        for violation in exc.violations:
            typer.echo(f"  {violation}", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary(fleet))
    typer.echo(f"{file}: OK")


def store_url_for(fleet_file: Path | None) -> str:
    """The store URL: $PPO_DR_DB_URL, else the fleet's store.url, else the default."""
    import os

    from ppo_dr.inventory import load_fleet

    if os.environ.get("PPO_DR_DB_URL"):
        return os.environ["PPO_DR_DB_URL"]
    path = fleet_file or config.fleet_file()
    if path.exists():
        fleet = load_fleet(path)
        if fleet.store.url:
            return fleet.store.url
        if fleet.store.url_secret and fleet.store.url_secret.env:
            value = os.environ.get(fleet.store.url_secret.env)
            if value:
                return value
    return config.default_store_url()


@db_app.command("upgrade")
@reports_errors
def db_upgrade(fleet: FleetOption = None) -> None:
    """Create or migrate the state store schema to the newest revision."""
    from ppo_dr.store import Store

    url = store_url_for(fleet)
    store = Store(url)
    try:
        before = store.current_revision()
        store.upgrade()
        after = store.current_revision()
    finally:
        store.close()
    typer.echo(f"store {store.url}: {before or 'empty'} -> {after}")  # url is password-masked


def main() -> None:
    """Console entry point for the domain-only command set."""
    app()


if __name__ == "__main__":
    main()
