"""``ppo-dr serve``: serve every runbook on its schedule from one process.

The work is :func:`deployments.serve.run_serve`; this module is only its command
line, and imports it (and with it Prefect) when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.support import FleetOption, reports_errors


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
    server_timeout: Annotated[
        float | None,
        typer.Option(
            "--server-timeout",
            min=10,
            max=900,
            help="Seconds the local Prefect server may take to become healthy "
            "(a loaded machine needs more than the default: 60 s, or "
            "PPO_DR_SERVER_START_S).",
        ),
    ] = None,
) -> None:
    """Serve every runbook on its schedule; Ctrl-C stops serving and the server.

    Starts a local Prefect server (database under the ppo-dr home) unless
    PREFECT_API_URL names one, and creates the runbooks' concurrency limits first.
    """
    from deployments.serve import run_serve

    code = run_serve(
        port=port,
        fleet=Path(fleet) if fleet else None,
        check=check,
        echo=typer.echo,
        server_timeout=server_timeout,
    )
    if code:
        raise typer.Exit(code)
