"""The ``ppo-dr`` console entry point: domain commands plus the orchestration ones.

:mod:`ppo_dr.cli` holds every command that works without Prefect; this module adds
the commands that talk to a Prefect API (``serve``), so the domain package never
imports Prefect and ``ppo-dr --help`` still lists everything in one place. Prefect
is imported only when such a command runs, so the other commands stay quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import deployments.failover_cli  # adds `failover run|approve`
import deployments.incident_cli  # noqa: F401  (adds `incident ack`)
from ppo_dr.cli import app
from ppo_dr.cli_support import FleetOption, reports_errors


@app.command("serve")
@reports_errors
def serve_command(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="Port of the local Prefect server (default 4200 if free, else any free one).",
        ),
    ] = None,
    fleet: FleetOption = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            "--once",
            help=(
                "Start the server, create the concurrency limits, register the "
                "deployments, print what would be served, stop and exit."
            ),
        ),
    ] = False,
) -> None:
    """Serve every runbook on its schedule; Ctrl-C stops serving and the server.

    Starts a local Prefect server (database under the ppo-dr home) unless
    PREFECT_API_URL names one, and creates the runbooks' concurrency limits first.
    """
    from deployments.serve import run_serve

    code = run_serve(port=port, fleet=Path(fleet) if fleet else None, check=check, echo=typer.echo)
    if code:
        raise typer.Exit(code)


def main() -> None:
    """Run the ``ppo-dr`` command."""
    app()


if __name__ == "__main__":
    main()
