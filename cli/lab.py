"""``ppo-dr lab``: bring the embedded lab fleet up, look at it, break it, heal it, stop it.

Errors are one line on stderr and exit code 2.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.chaos import chaos
from cli.support import command_group, reports_errors
from ppo_dr import config
from ppo_dr.errors import LabError

if TYPE_CHECKING:
    from ppo_dr.lab.supervisor import ComponentStatus, Lab

lab_app = command_group("The embedded lab fleet on 127.0.0.1: up, status, break, heal, down.")


DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir", "-d", help="Lab directory (default: $PPO_DR_HOME/lab).", show_default=False
    ),
]
#: What ``break`` and ``heal`` act on.
TargetArgument = Annotated[str, typer.Argument(help="A server id or a data centre id.")]


def _lab(directory: Path | None) -> Lab:
    from ppo_dr.lab.supervisor import Lab

    return Lab(directory or config.lab_dir())


def status_table(rows: Sequence[ComponentStatus]) -> str:
    """The status as a fixed-width table: name, DC, role, pid, ports, state, health, detail."""
    header = ("NAME", "DC", "ROLE", "PID", "PORT", "STATE", "HEALTHY", "DETAIL")
    lines = [header]
    for row in rows:
        ports = "-" if row.port is None else str(row.port)
        if row.http_port is not None:
            ports += f",{row.http_port}"
        lines.append(
            (
                row.name,
                row.dc or "-",
                row.role or row.kind,
                str(row.pid) if row.pid else "-",
                ports,
                row.state,
                "yes" if row.healthy else "NO",
                row.detail,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in lines
    ).rstrip()


@lab_app.command("up")
@reports_errors
def up(
    directory: DirOption = None,
    clients: Annotated[int, typer.Option("--clients", min=1, help="Number of clients.")] = 20,
    size: Annotated[int, typer.Option("--size", min=0, help="Client data in all, in MiB.")] = 200,
    fast: Annotated[
        bool, typer.Option("--fast", help="Compressed timings (mirror every minute, 20 s outage).")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated client data.")] = 1,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait until everything is healthy.")
    ] = 15.0,
    topology: Annotated[
        str,
        typer.Option(
            "--topology",
            help="loopback: one machine on 127.0.0.1; distributed: a network namespace per "
            "DC (as root), the HA Prefect control plane, deploy, a worker per DC pool and "
            "two control workers (docs/lab.md).",
        ),
    ] = "loopback",
    scale: Annotated[
        str | None,
        typer.Option(
            "--scale",
            help="APPSxCLIENTS, e.g. 50x20: that many app servers with that many clients "
            "each (overrides --clients; default: the classic 4 app servers).",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Where the loopback lab keeps its state store: sqlite (a file in the lab) "
            "or postgres (a private PostgreSQL cluster of the lab's own, which the "
            "store-restart fault restarts; default sqlite). The distributed lab's is its "
            "control plane's PostgreSQL.",
        ),
    ] = None,
) -> None:
    """Start the lab fleet in the background and wait until it is healthy."""
    from ppo_dr.lab import topology as lab_topology  # here: it loads YAML, slow for --help

    lab = _lab(directory)
    app_servers = lab_topology.DEFAULT_APP_SERVERS
    if scale is not None:
        app_servers, per_server = lab_topology.parse_scale(scale)
        clients = app_servers * per_server
    started = time.monotonic()
    distributed = topology == "distributed"
    timeout = max(timeout, 60.0) if distributed else timeout  # namespaces, busy machines

    def say(message: str) -> None:
        typer.echo(f"  {message}")

    if distributed and store is not None:
        raise LabError(
            "--store is the loopback lab's: the distributed lab's store is its "
            "control plane's PostgreSQL"
        )
    if not distributed:
        _loopback_up(
            lab,
            store or "sqlite",
            clients=clients,
            size_mb=size,
            fast=fast,
            seed=seed,
            timeout=timeout,
            progress=say,
            topology=topology,
            app_servers=app_servers,
        )
        typer.echo(f"State store: {lab.store_url}")
    else:
        from deployments import distributed_lab

        distributed_lab.lab_up(
            lab,
            echo=say,
            clients=clients,
            size_mb=size,
            fast=fast,
            seed=seed,
            timeout=timeout,
            app_servers=app_servers,
        )
        made = distributed_lab.start_prefect(lab, timeout=timeout, echo=say)
        typer.echo(f"Prefect API: {made.api_url} (workers use {made.inner_api_url})")
        typer.echo(f"State store: {lab.store_url} (the DCs use {lab.inner_store_url})")
    typer.echo(status_table(lab.status()))
    typer.echo(
        f"lab up in {time.monotonic() - started:.1f} s; fleet {lab.fleet_file}, "
        f"known_hosts {lab.known_hosts}, operator key {lab.operator_key}"
    )


def _loopback_up(lab: Lab, store: str, **options: Any) -> None:
    """``lab.up`` with the store in a cluster of the lab's own when *store* says so; that
    cluster goes down again if the lab does not come up."""
    from ppo_dr.lab import store_database
    from ppo_dr.lab.store_network import StoreUrls

    if store not in store_database.STORE_KINDS:
        raise LabError(f"--store {store!r}: one of {', '.join(store_database.STORE_KINDS)}")
    if store == "sqlite":
        lab.up(**options)
        return
    say = options["progress"]
    started: list[bool] = []

    def start_store(_net: object) -> StoreUrls:
        urls = store_database.start(lab.directory, say)
        started.append(True)
        return urls

    try:
        lab.up(store=start_store, **options)
    except BaseException:
        if started:  # ours to stop; a refused `up` leaves a running lab's store alone
            store_database.stop(lab.directory)
        raise


@lab_app.command("status")
@reports_errors
def status(directory: DirOption = None) -> None:
    """Show every lab process, its ports, and whether it answers through the network."""
    lab = _lab(directory)
    rows = lab.status()
    typer.echo(status_table(rows))
    unhealthy = [row.name for row in rows if not row.healthy]
    summary = "all healthy" if not unhealthy else f"unhealthy: {', '.join(unhealthy)}"
    typer.echo(f"lab {lab.directory}: {summary}")


@lab_app.command("break")
@reports_errors
def break_(
    target: TargetArgument,
    fault: Annotated[
        str,
        typer.Option(
            "--fault",
            help="power | hang | disk | network | host-key | disk-full | latency | clock-skew",
            show_default=False,
        ),
    ],
    directory: DirOption = None,
) -> None:
    """Inject a fault into a server or every server of a data centre."""
    lab = _lab(directory)
    affected = lab.break_(target, fault)
    typer.echo(f"{fault} fault on: {', '.join(affected) or 'nothing (no server it applies to)'}")


@lab_app.command("heal")
@reports_errors
def heal(
    target: TargetArgument,
    directory: DirOption = None,
) -> None:
    """Undo every fault on a server or a data centre and wait until it answers again."""
    lab = _lab(directory)
    healed = lab.heal(target)
    typer.echo(f"healed: {', '.join(healed)}" if healed else f"{target}: no faults to heal")


@lab_app.command("down")
@reports_errors
def down(directory: DirOption = None) -> None:
    """Stop every process of the lab, its control plane and namespaces (files stay)."""
    from deployments import distributed_lab

    lab = _lab(directory)
    stopped = distributed_lab.down(lab.directory, echo=lambda _: None)
    if stopped:
        typer.echo(f"stopped {len(stopped)}: {', '.join(stopped)}")
    else:
        typer.echo(f"lab {lab.directory}: nothing running")


control_plane_app = command_group(
    "Prefect in its production shape: PostgreSQL, Redis, two API servers, HAProxy."
)
ControlPlaneDir = Annotated[
    Path | None,
    typer.Option(
        "--dir", help="Directory of the control plane (default: <ppo-dr home>/control-plane)."
    ),
]


def _control_plane_dir(directory: Path | None) -> Path:
    from ppo_dr import config

    return directory or config.home() / "control-plane"


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


lab_app.add_typer(control_plane_app, name="control-plane")
lab_app.command("chaos")(chaos)
