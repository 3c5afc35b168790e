"""``ppo-dr worker --dc ID`` / ``--control``: the engine's own process worker on our pool.

A thin wrapper over ``prefect worker start --pool POOL --type process``: we only
choose the pool from the fleet (``dc-<id>`` or ``control``, see
:mod:`deployments.registry`), name the worker after its host and pool so the API
shows where a run ran, and put the project on ``PYTHONPATH`` so the worker's flow
runs import ``flows.*`` from this checkout (deployments are registered by module
path, without images or pull steps). Scheduling, heartbeats and crash detection are
the engine's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from deployments.automations import FLOW_HEARTBEAT_S
from deployments.registry import CONTROL_POOL
from flows.mirror_schedule import dc_pool
from ppo_dr import config
from ppo_dr.errors import PermanentError
from ppo_dr.inventory import Fleet

#: The directory that holds ``flows/``, ``tasks/`` and ``ppo_dr/``.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: How many ``control`` workers a fleet runs, each in another data centre.
CONTROL_WORKERS = 2
#: How often a worker asks the API for runs to start (the engine's default is 10 s).
#: A run queued behind a full ``mirror`` queue, or a failover's restore batch, starts
#: only at the next poll, so a 10 s poll adds 5 s on average to every hand-off; one
#: poll is one small query, and a fleet runs a worker per DC plus two.
WORKER_QUERY_S = 2


class WorkerError(PermanentError):
    """A worker cannot be started as asked (unknown DC, both or neither pool kinds)."""


def pool_for(fleet: Fleet, *, dc: str | None, control: bool) -> str:
    """The pool a worker serves: ``dc-<dc>`` for a known DC, or ``control``."""
    if control == (dc is not None):
        raise WorkerError("give exactly one of --dc ID or --control")
    if control:
        return CONTROL_POOL
    known = [d.id for d in fleet.data_centres]
    if dc not in known:
        raise WorkerError(f"unknown data centre {dc!r}; known: {', '.join(known)}")
    return dc_pool(dc)


@dataclass(frozen=True)
class PlacedWorker:
    """One worker of the distributed topology: which pool it serves, from which DC."""

    pool: str
    dc: str

    @property
    def name(self) -> str:
        """``<pool>@<dc>``: the worker's name in the API (one per pool and DC)."""
        return worker_name(self.pool, self.dc)


def placed_workers(fleet: Fleet) -> list[PlacedWorker]:
    """One worker per DC on its own pool, and two ``control`` workers in two DCs.

    The control workers go to different countries where the fleet has two, taken
    from the end of the fleet's DC list (the first DC usually holds the most app
    servers), so that losing one DC, or one country, leaves a control worker.
    """
    workers = [PlacedWorker(dc_pool(dc.id), dc.id) for dc in fleet.data_centres]
    chosen: list[str] = []
    countries: set[str] = set()
    for dc in reversed(fleet.data_centres):
        if dc.country not in countries and len(chosen) < CONTROL_WORKERS:
            chosen.append(dc.id)
            countries.add(dc.country)
    for dc in reversed(fleet.data_centres):
        if dc.id not in chosen and len(chosen) < CONTROL_WORKERS:
            chosen.append(dc.id)
    order = [dc.id for dc in fleet.data_centres]
    return workers + [PlacedWorker(CONTROL_POOL, dc) for dc in sorted(chosen, key=order.index)]


def worker_name(pool: str, host: str | None = None) -> str:
    """``<pool>@<host>``: unique per host and pool, readable in the UI."""
    return f"{pool}@{host or socket.gethostname()}"


def worker_command(pool: str, name: str, *, run_once: bool = False) -> list[str]:
    """The engine's worker command line for *pool*."""
    prefect = Path(sys.executable).with_name("prefect")
    command = [
        str(prefect) if prefect.exists() else "prefect",
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
        "--name",
        name,
    ]
    return [*command, "--run-once"] if run_once else command


def worker_env(api_url: str | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: ours, the project on PYTHONPATH, and *api_url*."""
    env = dict(os.environ if base is None else base)
    paths = [str(PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if api_url:
        env["PREFECT_API_URL"] = api_url
    # The zombie automation's window is counted in these beats (deployments.automations).
    env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(FLOW_HEARTBEAT_S)
    # The API answers 500 while PostgreSQL restarts; retried like 502/503 (2-32 s back-off,
    # about a minute in all), a run rides it out instead of failing (measured: it failed).
    env["PREFECT_CLIENT_RETRY_EXTRA_CODES"] = "500"
    # An operator's own poll interval wins; ours otherwise (see WORKER_QUERY_S).
    env.setdefault("PREFECT_WORKER_QUERY_SECONDS", str(WORKER_QUERY_S))
    env.setdefault(config.STORE_PATIENCE_ENV, str(config.RUNBOOK_STORE_PATIENCE_S))
    return env


def start_worker(
    pool: str,
    *,
    name: str | None = None,
    api_url: str | None = None,
    log: Path | None = None,
    base_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a worker on *pool* in its own session, in the background (the lab's way;
    stop it with SIGTERM to its process group). *base_env* replaces ``os.environ``."""
    out = log.open("ab") if log else None
    try:
        return subprocess.Popen(
            worker_command(pool, name or worker_name(pool)),
            env=worker_env(api_url, base_env),
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if out:
            out.close()


def run_worker(pool: str, *, name: str | None = None, api_url: str | None = None) -> int:
    """Run a worker on *pool* in the foreground until it stops (``ppo-dr worker``)."""
    command = worker_command(pool, name or worker_name(pool))
    return subprocess.call(command, env=worker_env(api_url), cwd=PROJECT_ROOT)
