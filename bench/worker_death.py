"""Benchmark: how long the engine takes to notice a dead worker, and what becomes of
the flow run that worker was running.

On a control plane of its own (:mod:`ppo_dr.lab.controlplane`: PostgreSQL, Redis, two
API servers, services, HAProxy), a process worker serves pool ``bench-dc``; a
deployment of :func:`sleeper` (sleeps 10 minutes) is run on it; once the run is
RUNNING the worker and the flow run's process (each with its process group) are
SIGKILLed, as a power loss of their host would. Then, every second: the worker's
status in the API (ONLINE -> OFFLINE, set by the services' foreman loop after
``inactivity_heartbeat_multiple`` missed heartbeats) and the run's state.

Killing only the worker's group is not a power loss: the flow process runs in a
session of its own, survives, and reports itself Crashed within ~2 s (measured).

    PYTHONPATH=. .venv/bin/python -m bench.worker_death [--heartbeat 30] [--watch 180]

(The deployment's entry point is ``bench.worker_death.sleeper``: the worker imports it
from this checkout.)

Not run by CI. Takes about 1 minute plus --watch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path

from prefect import flow

POOL = "bench-dc"


@flow(name="bench-sleeper")
def sleeper(seconds: float = 600.0) -> None:
    """Stand-in for a long mirror run."""
    time.sleep(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heartbeat", type=float, default=30.0, help="worker heartbeat (s)")
    parser.add_argument("--watch", type=float, default=180.0, help="seconds to watch after")
    args = parser.parse_args()

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.deployments.runner import EntrypointType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.deploy import ensure_work_pools
    from deployments.workers import start_worker
    from ppo_dr.lab import controlplane, processes

    directory = Path(tempfile.mkdtemp(prefix="ppo-dr-bench-worker-"))
    directory.chmod(0o755)
    worker = None
    try:
        plane = controlplane.up(directory)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env["PREFECT_WORKER_HEARTBEAT_SECONDS"] = str(args.heartbeat)
        env["PREFECT_HOME"] = str(directory / "prefect" / "worker")
        with temporary_settings(updates={PREFECT_API_URL: plane.api_url}):
            ensure_work_pools([POOL])  # before the deployment names it
            worker = start_worker(
                POOL,
                name="bench-worker",
                api_url=plane.api_url,
                base_env=env,
                log=directory / "logs" / "worker.log",
            )
            # By its module name: run with -m, this module is __main__, which the
            # worker's flow process could not import the flow from.
            from bench.worker_death import sleeper as importable

            deployment = importable.to_deployment(
                "sleeper", entrypoint_type=EntrypointType.MODULE_PATH
            )
            assert not isinstance(deployment, Coroutine)
            deployment.apply(work_pool_name=POOL)
            run = run_deployment("bench-sleeper/sleeper", timeout=0)
            assert isinstance(run, FlowRun)  # the sync form
            with get_client(sync_client=True) as client:
                deadline = time.monotonic() + 180
                while not (run.state and run.state.is_running()):
                    if time.monotonic() > deadline:
                        raise SystemExit("the run never started (worker log: logs/worker.log)")
                    time.sleep(0.5)
                    run = client.read_flow_run(run.id)
                # A power loss kills the flow process too: the worker starts it in a
                # session of its own, so it is found by the run's infrastructure pid.
                flow_pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
                print(f"run {run.id} RUNNING (pid {flow_pid}); SIGKILL of worker and flow")
                killed = time.monotonic()
                for pid in (worker.pid, flow_pid):
                    processes.signal_group(pid, signal.SIGKILL)
                worker.wait()
                offline_after = None
                last_state = None
                while time.monotonic() - killed < args.watch:
                    elapsed = time.monotonic() - killed
                    workers = client.read_workers_for_work_pool(POOL)
                    mine = [w for w in workers if w.name == "bench-worker"]
                    status = mine[0].status.value if mine else "?"
                    if offline_after is None and status == "OFFLINE":
                        offline_after = elapsed
                        print(f"worker OFFLINE after {elapsed:.0f} s")
                    state = client.read_flow_run(run.id).state
                    name = state.name if state else "?"
                    if name != last_state:
                        print(f"{elapsed:5.0f} s: run {name}")
                        last_state = name
                    time.sleep(1)
                print(
                    f"heartbeat {args.heartbeat:.0f} s: worker offline after "
                    f"{offline_after if offline_after is None else round(offline_after)} s; "
                    f"run state {args.watch:.0f} s after the kill: {last_state}"
                )
        return 0
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        if (directory / controlplane.STATE_FILE).exists():
            controlplane.down(directory)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
