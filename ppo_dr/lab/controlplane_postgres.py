"""The lab control plane's private PostgreSQL cluster: find the binaries, initialise,
start, and create the ``prefect`` and ``store`` databases.

Debian's binaries (the engine needs >= 14.9), run as the ``postgres`` user when we are
root; the ``ppo`` role's password lives only in ``DIR/pg/password`` and the libpq file
``DIR/pgpass`` (:mod:`ppo_dr.lab.store_network`). The restart faults reuse
:func:`start_postgres_server` and :func:`postgres_component`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ppo_dr.errors import LabError
from ppo_dr.lab import pid_identity as processes
from ppo_dr.lab.controlplane_record import (
    Component,
    ControlPlane,
    Echo,
    marked_env,
    replace_component,
    run,
    save,
)
from ppo_dr.lab.store_network import listen_addresses, pg_hba, pg_password, write_passfile

#: The engine's documented minimum for its PostgreSQL backend.
MIN_POSTGRES = (14, 9)
PG_ROOT = Path("/usr/lib/postgresql")


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL ``bin`` directory; refuses one older than 14.9."""
    versions = sorted(
        (p for p in PG_ROOT.glob("*/bin/postgres")), key=lambda p: float(p.parent.parent.name)
    )
    if not versions:
        raise LabError(f"no PostgreSQL under {PG_ROOT} (apt-get install postgresql)")
    binary = versions[-1]
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"(\d+)\.(\d+)", out.stdout)
    if not match or (int(match[1]), int(match[2])) < MIN_POSTGRES:
        need = ".".join(map(str, MIN_POSTGRES))
        raise LabError(f"{binary}: {out.stdout.strip()}; Prefect needs PostgreSQL >= {need}")
    return binary.parent


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the ``postgres`` user when we are root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def start_postgres_server(plane: ControlPlane, env: dict[str, str]) -> None:
    """``pg_ctl start`` of the recorded cluster on its port (inside the control site's
    namespace, if any); waits until it accepts connections."""
    pg_dir = Path(plane.directory) / "pg"
    options = (
        f"-c listen_addresses={listen_addresses(plane)} -c port={plane.pg_port} "
        f"-c unix_socket_directories={pg_dir} -c max_connections=300"
    )
    command = [
        str(Path(plane.pg_bin) / "pg_ctl"), "-D", str(pg_dir / "data"),
        "-l", str(pg_dir / "postgres.log"), "-w", "-t", "60", "-o", options, "start",
    ]  # fmt: skip
    run(plane.inside(as_postgres(command)), env, "PostgreSQL start")


def postgres_component(plane: ControlPlane) -> Component:
    """The running postmaster as a component (its pid from ``postmaster.pid``)."""
    pg_dir = Path(plane.directory) / "pg"
    pid = int((pg_dir / "data" / "postmaster.pid").read_text().split()[0])
    return Component(
        "postgres", pid, plane.pg_port, ["postgres", str(pg_dir)], processes.start_ticks(pid)
    )


def start_postgres(plane: ControlPlane, echo: Echo) -> None:
    """Initialise a fresh cluster in ``DIR/pg``, start it and create the role and the
    ``prefect`` and ``store`` databases; records the postmaster as a component."""
    directory = Path(plane.directory)
    pg_bin = postgres_bin()
    plane.pg_bin = str(pg_bin)
    pg_dir = directory / "pg"
    pg_dir.mkdir(mode=0o700)
    password = pg_password()
    (pg_dir / "password").write_text(password + "\n")
    (pg_dir / "password").chmod(0o600)
    env = marked_env(directory)
    if os.geteuid() == 0:
        shutil.chown(pg_dir, "postgres", "postgres")
        reach = subprocess.run(as_postgres(["test", "-x", str(pg_dir)]), check=False)
        if reach.returncode:
            raise LabError(
                f"the postgres user cannot reach {pg_dir}: a parent directory is private "
                "(mode 0700?); choose a directory under a world-traversable path"
            )
    run(
        as_postgres(
            [
                str(pg_bin / "initdb"),
                "-D",
                str(pg_dir / "data"),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
            ]
        ),
        env,
        "initdb",
    )
    (pg_dir / "data" / "pg_hba.conf").write_text(pg_hba(plane.netns_address))
    start_postgres_server(plane, env)
    replace_component(plane, postgres_component(plane))
    save(plane)
    sql = (
        f"CREATE ROLE ppo LOGIN PASSWORD '{password}';"
        " CREATE DATABASE prefect OWNER ppo; CREATE DATABASE store OWNER ppo;"
    )
    for statement in sql.split(";"):
        if statement.strip():
            run(
                as_postgres(
                    [
                        str(pg_bin / "psql"),
                        "-q",
                        "-h",
                        str(pg_dir),
                        "-p",
                        str(plane.pg_port),
                        "-U",
                        "postgres",
                        "-c",
                        statement,
                    ]
                ),
                env,
                "creating the role and databases",
            )
    write_passfile(plane)
    echo(f"PostgreSQL: {listen_addresses(plane)} port {plane.pg_port} (databases prefect, store)")
