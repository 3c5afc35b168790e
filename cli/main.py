"""The ``ppo-dr`` console entry point: the root command and its groups, added here.

Each group lives whole in its own module of this package. A module imports only
typer and light ``ppo_dr`` modules at the top; every command imports what it works
with (the store, the fleet access, Prefect) when it runs, so ``ppo-dr --help`` and
the commands that need no Prefect stay quick.
"""

from __future__ import annotations

import typer

from cli.db import db_app
from cli.evidence import evidence_command
from cli.failover import failover_app
from cli.incident import incident_app
from cli.inventory import inventory_app
from cli.lab import lab_app
from cli.maintenance import maintenance_app
from cli.mirror import mirror_app
from cli.rebalance import rebalance_app
from cli.report import report_app
from cli.serve import serve_command
from cli.server import server_app
from cli.topology import deploy_command, worker_command

app = typer.Typer(
    name="ppo-dr",
    help="Disaster-recovery runbooks for a multi-tenant SaaS fleet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(inventory_app, name="inventory")
app.add_typer(db_app, name="db")
app.add_typer(lab_app, name="lab")
app.add_typer(mirror_app, name="mirror")
app.add_typer(incident_app, name="incident")
app.add_typer(maintenance_app, name="maintenance")
app.add_typer(failover_app, name="failover")
app.add_typer(report_app, name="report")
app.add_typer(rebalance_app, name="rebalance")
app.add_typer(server_app, name="server")
app.command("serve")(serve_command)
app.command("evidence")(evidence_command)
app.command("worker")(worker_command)
app.command("deploy")(deploy_command)


def main() -> None:
    """Run the ``ppo-dr`` command."""
    app()


if __name__ == "__main__":
    main()
