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
from ppo_dr.lab.cli import lab_app

control_plane_app = typer.Typer(
    help="Prefect in its production shape: PostgreSQL, Redis, two API servers, HAProxy.",
    no_args_is_help=True,
)
lab_app.add_typer(control_plane_app, name="control-plane")
ControlPlaneDir = Annotated[
    Path | None,
    typer.Option(
        "--dir", help="Directory of the control plane (default: <ppo-dr home>/control-plane)."
    ),
]


def _control_plane_dir(directory: Path | None) -> Path:
    from ppo_dr import config

    return directory or config.home() / "control-plane"


ApiUrlOption = Annotated[
    str | None,
    typer.Option("--api-url", help="Prefect API URL (default: $PREFECT_API_URL)."),
]


def _api_url_or_fail(api_url: str | None) -> str:
    import os

    from ppo_dr.cli_support import fail

    url = api_url or os.environ.get("PREFECT_API_URL")
    if not url:
        raise fail("error: no Prefect API: pass --api-url or set PREFECT_API_URL")
    return url


@app.command("worker")
@reports_errors
def worker_command(
    dc: Annotated[str | None, typer.Option("--dc", help="Data centre whose pool to serve.")] = None,
    control: Annotated[
        bool, typer.Option("--control", help="Serve the off-site control pool.")
    ] = False,
    fleet: FleetOption = None,
    api_url: ApiUrlOption = None,
) -> None:
    """Run Prefect's process worker on dc-<ID> or control until stopped."""
    from deployments.workers import pool_for, run_worker
    from ppo_dr import config
    from ppo_dr.inventory import load_fleet

    pool = pool_for(load_fleet(fleet or config.fleet_file()), dc=dc, control=control)
    code = run_worker(pool, api_url=_api_url_or_fail(api_url))
    if code:
        raise typer.Exit(code)


@app.command("deploy")
@reports_errors
def deploy_command(fleet: FleetOption = None, api_url: ApiUrlOption = None) -> None:
    """Register work pools, limits, deployments and automations on a Prefect server."""
    from deployments.deploy import deploy
    from ppo_dr import config

    count = deploy(_api_url_or_fail(api_url), fleet or config.fleet_file(), echo=typer.echo)
    typer.echo(f"deploy: {count} deployment(s) registered")


@control_plane_app.command("up")
@reports_errors
def control_plane_up(directory: ControlPlaneDir = None) -> None:
    """Start PostgreSQL, Redis, two Prefect API servers, the services and HAProxy."""
    from ppo_dr.lab.controlplane import up

    path = _control_plane_dir(directory)
    path.mkdir(parents=True, exist_ok=True)
    up(path, echo=typer.echo)


@control_plane_app.command("down")
@reports_errors
def control_plane_down(directory: ControlPlaneDir = None) -> None:
    """Stop every process of the control plane in DIR (its files stay, for a post-mortem)."""
    from ppo_dr.lab.controlplane import down

    down(_control_plane_dir(directory), echo=typer.echo)


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
