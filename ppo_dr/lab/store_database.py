"""A loopback lab's state store on a private PostgreSQL (``lab up --store postgres``).

The loopback lab keeps its store in a SQLite file by default: nothing to start, and
what ``make demo`` needs. Production keeps it in PostgreSQL, and a database restart
means something there that SQLite cannot show (a server that refuses connections,
pooled connections cut mid-transaction). So a loopback lab may have its store in a
cluster of its own: the control plane's PostgreSQL (:mod:`controlplane_postgres`:
Debian's binaries, run as ``postgres`` when we are root, the ``ppo`` role by password
from the libpq file the URLs name) with nothing else of the control plane, recorded in
``DIR/store-db/controlplane.json`` on 127.0.0.1. ``store-restart`` then stops it
``-m immediate`` and starts it again (:func:`controlplane_restart.restart`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Final, Literal, get_args

from ppo_dr.errors import LabError
from ppo_dr.lab import controlplane
from ppo_dr.lab.controlplane_postgres import start_postgres
from ppo_dr.lab.controlplane_record import STATE_FILE, ControlPlane, Echo, load, save
from ppo_dr.lab.store_network import StoreUrls, store_urls
from ppo_dr.lab.topology import free_ports

#: The lab subdirectory of the store's cluster.
STORE_DB_DIR: Final = "store-db"
#: ``sqlite``: a file in the lab (the default); ``postgres``: a cluster of the lab's own.
StoreKind = Literal["sqlite", "postgres"]
STORE_KINDS: tuple[str, ...] = get_args(StoreKind)


def store_db_dir(lab_dir: Path) -> Path:
    return Path(lab_dir).expanduser().resolve() / STORE_DB_DIR


def recorded(lab_dir: Path) -> bool:
    """Whether the lab in *lab_dir* has (or had) its store in a cluster of its own."""
    return (store_db_dir(lab_dir) / STATE_FILE).exists()


def start(lab_dir: Path, echo: Echo = print) -> StoreUrls:
    """Initialise and start the store's cluster in ``lab_dir/store-db`` (a fresh one:
    a stopped cluster's files are replaced); where it is. On failure whatever started is
    stopped again and :class:`LabError` says why."""
    directory = store_db_dir(lab_dir)
    if recorded(lab_dir) and load(directory).state != "stopped":
        raise LabError(f"the store's database in {directory} is still recorded running")
    if (directory / "pg").exists():
        shutil.rmtree(directory / "pg")
    directory.mkdir(parents=True, exist_ok=True)
    plane = ControlPlane(directory=str(directory), pg_port=free_ports(1)[0])
    save(plane)
    try:
        start_postgres(plane, echo)
    except BaseException:
        controlplane.down(directory, echo=lambda _: None)
        raise
    plane.state = "up"
    save(plane)
    return store_urls(plane)


def postmaster(lab_dir: Path) -> tuple[int | None, int, str]:
    """The store cluster's postmaster pid (None when it is not running), port and
    recorded state (``up``, ``stopped``...), for ``lab status``. The record follows a
    ``store-restart``: the restarted postmaster replaces the crashed one in it."""
    plane = load(store_db_dir(lab_dir))
    running = [c for c in plane.components if c.name == "postgres" and c.is_running()]
    return (running[0].pid if running else None), plane.pg_port, plane.state


def stop(lab_dir: Path) -> list[str]:
    """Stop the store's cluster of the lab in *lab_dir*, if it has one (safe to repeat);
    what was stopped, named for ``lab down``."""
    if not recorded(lab_dir):
        return []
    directory = store_db_dir(lab_dir)
    if load(directory).state == "stopped":
        return []
    return [f"store {name}" for name in controlplane.down(directory, echo=lambda _: None)]
