"""Benchmark: how long the engine takes to notice a dead worker and a dead flow run.

On a control plane of its own (:mod:`ppo_dr.lab.controlplane`: PostgreSQL, Redis, two
API servers, services, HAProxy), with the automations ``ppo-dr deploy`` creates
(:func:`deployments.automations.zombie_flow_runs_automation`), each of ``--runs``
trials starts a process worker on pool ``bench-dc`` (the environment
``ppo-dr worker`` gives it: flow heartbeats every 30 s), runs a deployment of
:func:`sleeper` (sleeps 10 minutes) on it, and once the run has sent a heartbeat
SIGKILLs the worker and the flow run's process (each with its process group), as a
power loss of their host would. Then, every second, until both are seen (or
``--watch`` runs out):

- the worker's status in the API: ONLINE -> OFFLINE, set by the services' foreman
  loop after ``inactivity_heartbeat_multiple`` missed worker heartbeats;
- the run's state: Running -> Crashed, set by the zombie automation (no
  ``prefect.flow-run.heartbeat`` for 90 s).

Killing only the worker's group is not a power loss: the flow process runs in a
session of its own, survives, and reports itself Crashed within ~2 s (measured).

    PYTHONPATH=. .venv/bin/python -m bench.worker_death [--runs 3] [--heartbeat 30]

(The deployment's entry point is ``bench.worker_death.sleeper``: the worker imports it
from this checkout.) Not run by CI. Takes about 1 minute plus 2-3 minutes a trial.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow

POOL = "bench-dc"


@flow(name="bench-sleeper")
def sleeper(seconds: float = 600.0) -> None:
    """Stand-in for a long failover orchestration."""
    time.sleep(seconds)


@dataclass
class Trial:
    """What one power loss showed, in seconds after the SIGKILL (None: not seen)."""

    offline_after: float | None
    crashed_after: float | None
    last_beat_before: float
    load: float


def _heartbeats(client: Any, run_id: Any) -> list[Any]:
    """The run's ``prefect.flow-run.heartbeat`` events the server stored."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    page = client.read_events(
        filter=EventFilter(
            event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
        ),
        limit=50,
    )
    return list(page.events)


def trial(n: int, api_url: str, directory: Path, watch: float, heartbeat: float) -> Trial:
    """One power loss of a worker and the run it runs; see the module's docstring."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    from deployments.workers import start_worker
    from ppo_dr.lab import pid_identity

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_WORKER_HEARTBEAT_SECONDS"] = str(heartbeat)
    env["PREFECT_HOME"] = str(directory / "prefect" / f"worker-{n}")
    name = f"bench-worker-{n}"
    worker = start_worker(
        POOL, name=name, api_url=api_url, base_env=env, log=directory / "logs" / f"{name}.log"
    )
    try:
        run = run_deployment("bench-sleeper/sleeper", timeout=0)
        assert isinstance(run, FlowRun)  # the sync form
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 300
            while not (run.state and run.state.is_running() and _heartbeats(client, run.id)):
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {run.id} never beat (logs/{name}.log)")
                time.sleep(1)
                run = client.read_flow_run(run.id)
            # A power loss kills the flow process too: the worker starts it in a
            # session of its own, so it is found by the run's infrastructure pid.
            flow_pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
            for pid in (worker.pid, flow_pid):
                pid_identity.signal_group(pid, signal.SIGKILL)
            killed = time.monotonic()
            killed_at = time.time()
            worker.wait()
            newest = max(e.occurred for e in _heartbeats(client, run.id))
            last_beat_before = killed_at - newest.timestamp()
            offline_after = crashed_after = None
            while time.monotonic() - killed < watch and None in (offline_after, crashed_after):
                elapsed = time.monotonic() - killed
                mine = [w for w in client.read_workers_for_work_pool(POOL) if w.name == name]
                if offline_after is None and mine and mine[0].status.value == "OFFLINE":
                    offline_after = elapsed
                state = client.read_flow_run(run.id).state
                if crashed_after is None and state is not None and state.is_crashed():
                    crashed_after = elapsed
                time.sleep(1)
        result = Trial(offline_after, crashed_after, last_beat_before, os.getloadavg()[0])
        print(
            f"trial {n}: last flow heartbeat {result.last_beat_before:.0f} s before the kill; "
            f"worker OFFLINE after {_s(result.offline_after)}, run Crashed after "
            f"{_s(result.crashed_after)} (load {result.load:.1f})",
            flush=True,
        )
        return result
    finally:
        if worker.poll() is None:
            pid_identity.signal_group(worker.pid, signal.SIGKILL)


def _s(value: float | None) -> str:
    return "not seen" if value is None else f"{value:.0f} s"


def _median(values: list[float | None]) -> str:
    seen = [v for v in values if v is not None]
    if not seen:
        return "never seen"
    missed = f", {len(values) - len(seen)} not seen" if len(seen) < len(values) else ""
    middle, low, high = statistics.median(seen), min(seen), max(seen)
    return f"median {middle:.0f} s ({low:.0f}-{high:.0f}, n = {len(seen)}{missed})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="power losses, one after another")
    parser.add_argument("--heartbeat", type=float, default=30.0, help="worker heartbeat (s)")
    parser.add_argument("--watch", type=float, default=300.0, help="seconds to watch a trial")
    parser.add_argument("--keep", action="store_true", help="keep the control plane's logs")
    args = parser.parse_args()

    from prefect.deployments.runner import EntrypointType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.automations import ensure_automation, zombie_flow_runs_automation
    from deployments.deploy import ensure_work_pools
    from ppo_dr.lab import controlplane

    directory = Path(tempfile.mkdtemp(prefix="ppo-dr-bench-worker-"))
    directory.chmod(0o755)
    try:
        plane = controlplane.up(directory)
        with temporary_settings(updates={PREFECT_API_URL: plane.api_url}):
            ensure_work_pools([POOL])  # before the deployment names it
            print(f"automation: {ensure_automation(zombie_flow_runs_automation())}")
            # By its module name: run with -m, this module is __main__, which the
            # worker's flow process could not import the flow from.
            from bench.worker_death import sleeper as importable

            deployment = importable.to_deployment(
                "sleeper", entrypoint_type=EntrypointType.MODULE_PATH
            )
            assert not isinstance(deployment, Coroutine)
            deployment.apply(work_pool_name=POOL)
            trials = [
                trial(n, plane.api_url, directory, args.watch, args.heartbeat)
                for n in range(1, args.runs + 1)
            ]
        loads = [t.load for t in trials]
        print(
            f"worker heartbeat {args.heartbeat:.0f} s, flow heartbeat 30 s, zombie window 90 s; "
            f"load {min(loads):.1f}-{max(loads):.1f}\n"
            f"  worker OFFLINE: {_median([t.offline_after for t in trials])}\n"
            f"  run Crashed:    {_median([t.crashed_after for t in trials])}"
        )
        return 0 if all(t.crashed_after is not None for t in trials) else 1
    finally:
        if (directory / controlplane.STATE_FILE).exists():
            controlplane.down(directory)
        if args.keep:
            print(f"logs kept in {directory / 'logs'}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
