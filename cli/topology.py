"""``ppo-dr worker`` and ``ppo-dr deploy``: the runbooks on a distributed Prefect.

``worker`` runs the engine's own process worker on a data centre's pool
(``dc-<id>``) or on ``control``; ``deploy`` registers pools, limits, deployments and
automations on a server, idempotently (docs/deploy.md). Prefect is imported inside
each command, so ``ppo-dr --help`` stays quick.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.support import FleetOption, reports_errors

ApiUrlOption = Annotated[
    str | None,
    typer.Option("--api-url", help="Prefect API URL (default: $PREFECT_API_URL)."),
]


def _api_url_or_fail(api_url: str | None) -> str:
    import os

    from cli.support import fail

    url = api_url or os.environ.get("PREFECT_API_URL")
    if not url:
        raise fail("error: no Prefect API: pass --api-url or set PREFECT_API_URL")
    return url


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


@reports_errors
def deploy_command(fleet: FleetOption = None, api_url: ApiUrlOption = None) -> None:
    """Register work pools, limits, deployments and automations on a Prefect server."""
    from deployments.deploy import deploy
    from ppo_dr import config

    count = deploy(_api_url_or_fail(api_url), fleet or config.fleet_file(), echo=typer.echo)
    typer.echo(f"deploy: {count} deployment(s) registered")
