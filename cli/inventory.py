"""``ppo-dr inventory``: check a fleet file before anything uses it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.support import command_group
from ppo_dr.errors import InventoryError

inventory_app = command_group("Check the fleet inventory (fleet.yaml).")


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
