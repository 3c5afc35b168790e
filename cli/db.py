"""``ppo-dr db``: create or migrate the state store's schema."""

from __future__ import annotations

import typer

from cli.support import FleetOption, command_group, open_store, reports_errors

db_app = command_group("Manage the state store (placements, incidents, notices).")


@db_app.command("upgrade")
@reports_errors
def db_upgrade(fleet: FleetOption = None) -> None:
    """Create or migrate the state store schema to the newest revision."""
    store = open_store(fleet)
    try:
        before = store.current_revision()
        store.upgrade()
        after = store.current_revision()
    finally:
        store.close()
    typer.echo(f"store {store.url}: {before or 'empty'} -> {after}")  # url is password-masked
