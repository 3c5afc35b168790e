"""Benchmark: the fleet-wide mirror on the per-DC workers vs on one worker, and the
engine's overhead per task.

On a distributed lab of its own (as root; ``--scale``, ``--size``; every scheduled
mirror deployment paused, the fleet's ``mirror-fleet`` and each server's
``mirror-server/mirror-<id>``, so that no scheduled mirror falls into a measured round,
as some did at 50x20 and at 20x10 on the hour), every app server is
mirrored once (the full first snapshot, not timed), then in turns, ``--rounds`` times:

- **per-DC workers**: each app server's ``mirror-server/mirror-<id>`` deployment, run
  on its data centre's pool (the distributed topology's routing: one flow run, one
  process, per server, spread over the three DC workers);
- **one worker**: the ``mirror-fleet`` flow (every server's mirror as a subflow, in
  threads of one process) on a pool of its own served by one worker in cpt1.

Both are incremental runs over the same fleet, within the same limits (one mirror per
server, two per DC at once): on the per-DC workers the DC pool's ``mirror`` work queue
holds the runs beyond two as Scheduled (their wait is in the pick-up), in the one worker
the flow's DC slot does (its wait is shown apart). For each: the wall time (first run
asked for -> last run ended), the flow runs' pick-up (scheduled -> running: the worker's
poll and the process start), and the engine's overhead from the task runs' state
timestamps: the time each ``mirror-server`` run spent outside any of its task runs (its
body only calls tasks and the engine: labels, slots, artifacts, events; each task's wait
from Pending to Running lies there too and is shown apart, not added again), per run and
per task, less the wait for its DC's slot and the SSH connection before the snapshot
(shown apart). The task's own measured work is the snapshot's duration as the mirror
reports it in its heartbeat (``duration_s``), set against its ``take-snapshots`` task
run. Target (issue 9): the engine's overhead <= 5 % of the run's wall time.

    PYTHONPATH=. .venv/bin/python -m bench.mirror_fleet --scale 50x20 --size 100 [--rounds 3]

Not run by CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.dc_loss import lab_scale, mirror_schedules_paused, reachable_dir, scale_options
from deployments import distributed_lab
from deployments.demo import dc_loss
from deployments.demo.session import prefect_api
from deployments.deploy import ensure_work_pools
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab import controlplane
from ppo_dr.lab.supervisor import Lab

ONE_POOL = "bench-mirror-one"
ONE_WORKER = "bench-one@cpt1"
ONE_DEPLOYMENT = "mirror-fleet/bench-one-worker"
MIRROR_HEARTBEAT = "ppo-dr.mirror.heartbeat"
LAB_WAIT_S = 1800.0
TARGET_SHARE = 0.05


def spread(values: Iterable[float]) -> str:
    """``median (min-max), n=N``."""
    seen = list(values)
    if not seen:
        return "none"
    return f"{statistics.median(seen):.2f} ({min(seen):.2f}-{max(seen):.2f}), n={len(seen)}"


@dataclass
class Mode:
    """One measured mirror of the fleet."""

    name: str
    wall_s: float
    pickup_s: list[float]
    pending_s: list[float]
    slot_wait_s: list[float]  # for the DC's slot, and opening SSH, before the snapshot
    outside_tasks_s: float
    running_s: float
    runs: int
    task_runs: int
    snapshot_task_minus_work_s: list[float]
    load: float

    @property
    def overhead_s(self) -> float:
        """Engine time in the runs: the time outside their task runs, which holds every
        task's Pending wait too (a task run's span starts when it is Running), so the
        waits are not added again."""
        return self.outside_tasks_s

    @property
    def share(self) -> float:
        """The overhead's share of the mirror-server runs' own time (Running -> ended,
        summed: the runs overlap, so the fleet's wall time is not the denominator)."""
        return self.overhead_s / self.running_s if self.running_s else float("nan")

    def line(self) -> str:
        per_task = self.overhead_s / self.task_runs if self.task_runs else float("nan")
        per_run = self.overhead_s / self.runs if self.runs else float("nan")
        return (
            f"{self.name:15} wall {self.wall_s:7.1f} s; {self.runs} runs, {self.task_runs} "
            f"task runs; engine overhead {self.overhead_s:.1f} s = {per_run:.2f} s/run, "
            f"{per_task * 1000:.0f} ms/task, "
            f"{self.share:.1%} of the server runs' time (load {self.load:.1f})"
        )


def start_one_worker(made: distributed_lab.DistributedLab) -> None:
    """The ``mirror-fleet`` flow as a deployment on a pool of its own, and one worker on it."""
    from prefect.deployments.runner import EntrypointType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.mirror import mirror_fleet

    with temporary_settings(updates={PREFECT_API_URL: made.api_url}):
        ensure_work_pools([ONE_POOL])
        deployment = mirror_fleet.to_deployment(
            ONE_DEPLOYMENT.split("/")[1], entrypoint_type=EntrypointType.MODULE_PATH
        )
        assert not isinstance(deployment, Coroutine)
        deployment.apply(work_pool_name=ONE_POOL)
    plane = controlplane.load(distributed_lab.control_plane_dir(made.lab.directory))
    distributed_lab.start_lab_worker(made.lab, plane, ONE_POOL, ONE_WORKER, "cpt1", timeout=120)


def run_one_worker(api_url: str) -> None:
    """One ``mirror-fleet`` run on the one worker, waited for; it must complete."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    with prefect_api(api_url) as client:
        run = run_deployment(ONE_DEPLOYMENT, timeout=0)
        assert isinstance(run, FlowRun)
        deadline = time.monotonic() + LAB_WAIT_S
        while not (run.state and run.state.is_final()):
            if time.monotonic() > deadline:
                raise SystemExit(f"{run.name}: not final in {LAB_WAIT_S:.0f} s")
            time.sleep(1.0)
            run = client.read_flow_run(run.id)
        if not run.state.is_completed():
            raise SystemExit(f"{run.name}: {run.state.name}: {run.state.message}")


def _server_runs(client: Any, since: datetime) -> list[Any]:
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    return list(
        client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["mirror-server"])),
            flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=since),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])),
            ),
            limit=200,
        )
    )


def _busy_s(intervals: list[tuple[datetime, datetime]]) -> float:
    """Seconds covered by the union of *intervals*."""
    total, end = 0.0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            total += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            total += (stop - end).total_seconds()
            end = stop
    return total


def _pending_s(client: Any, task_run: Any) -> float | None:
    """Pending -> Running of *task_run* by its state timestamps (its ``created`` is when
    the server stored it from the events, which can be after it ran)."""
    states = client.read_task_run_states(task_run.id)
    pending = [s.timestamp for s in states if s.type.value == "PENDING"]
    running = [s.timestamp for s in states if s.type.value == "RUNNING"]
    if not (pending and running):
        return None
    return (min(running) - min(pending)).total_seconds()


def _snapshot_work(client: Any, since: datetime) -> dict[str, float]:
    """server -> the snapshot's own ``duration_s`` from each mirror heartbeat since *since*."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    work: dict[str, float] = {}
    page = client.read_events(
        filter=EventFilter(
            event=EventNameFilter(name=[MIRROR_HEARTBEAT]),
            occurred=EventOccurredFilter(since=since),
        ),
        limit=50,
    )
    while page is not None:
        for event in page.events:
            if event.payload.get("duration_s") is not None and "server" in event.payload:
                work[str(event.payload["server"])] = float(event.payload["duration_s"])
        page = client.read_events_page(str(page.next_page)) if page.next_page else None
    return work


def measure(name: str, api_url: str, since: datetime, wall_s: float) -> Mode:
    """The mode's figures from the API: its mirror-server runs and their task runs."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    time.sleep(5.0)  # events become readable a moment after they are sent
    with prefect_api(api_url) as client:
        runs = _server_runs(client, since)
        work = _snapshot_work(client, since - timedelta(seconds=5))
        pickup, pending, minus_work, waits = [], [], [], []
        outside = running = 0.0
        count = 0
        for run in runs:
            if run.parent_task_run_id is None and run.expected_start_time and run.start_time:
                pickup.append((run.start_time - run.expected_start_time).total_seconds())
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])), limit=200
            )
            spans = [(t.start_time, t.end_time) for t in tasks if t.start_time and t.end_time]
            pending += [p for t in tasks if (p := _pending_s(client, t)) is not None]
            count += len(tasks)
            snap = [t for t in tasks if t.name.startswith("snapshot-") and t.end_time]
            if not (run.start_time and run.end_time and snap):
                continue
            # Between the slot check and the snapshot the run waits for its DC's slot
            # and opens SSH: a limit and the network, not the engine; counted apart.
            checked = [t.end_time for t in tasks if t.name.startswith("mirror-slot-free")]
            opened = max([run.start_time, *checked])
            window = [(max(a, opened), min(b, snap[0].start_time)) for a, b in spans]
            wait = (snap[0].start_time - opened).total_seconds() - _busy_s(
                [(a, b) for a, b in window if a < b]
            )
            waits.append(wait)
            ran = (run.end_time - run.start_time).total_seconds() - wait
            running += ran
            outside += ran - _busy_s(spans)
            server = str(run.parameters.get("server_id"))
            if server in work:
                took = (snap[0].end_time - snap[0].start_time).total_seconds()
                minus_work.append(took - work[server])
    load = os.getloadavg()[0]
    return Mode(
        name, wall_s, pickup, pending, waits, outside, running, len(waits), count, minus_work, load
    )


def one_round(made: distributed_lab.DistributedLab, fleet: Fleet) -> list[Mode]:
    modes: list[Mode] = []
    for name in ("per-DC workers", "one worker"):
        since = datetime.now().astimezone()
        began = time.monotonic()
        if name == "one worker":
            run_one_worker(made.api_url)
        else:
            dc_loss.mirror_every_app_server(made.api_url, fleet, say=lambda _: None)
        modes.append(measure(name, made.api_url, since, time.monotonic() - began))
        print(f"  {modes[-1].line()}", flush=True)
    return modes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scale_options(parser, "50x20", 100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if (scale := lab_scale(args)) is None:
        return 2
    apps, per = scale
    base = reachable_dir("ppo-dr-bench-mirror-")
    lab = Lab(base / "lab")
    try:
        began = time.monotonic()
        distributed_lab.lab_up(
            lab, echo=lambda _: None, clients=apps * per, size_mb=args.size, fast=False,
            timeout=LAB_WAIT_S, app_servers=apps,
        )  # fmt: skip
        made = distributed_lab.start_prefect(lab, timeout=LAB_WAIT_S, echo=lambda _: None)
        start_one_worker(made)
        fleet = load_fleet(lab.fleet_file)
        print(f"lab {args.scale} ({args.size} MiB) up in {time.monotonic() - began:.0f} s")
        with mirror_schedules_paused(made.api_url) as paused:
            print(f"schedules paused for the bench: {len(paused)} mirror deployments")
            began = time.monotonic()
            dc_loss.mirror_every_app_server(made.api_url, fleet, say=lambda _: None)
            print(f"first (full) mirror on the per-DC workers: {time.monotonic() - began:.1f} s")
            modes = [m for _ in range(args.rounds) for m in one_round(made, fleet)]
    finally:
        distributed_lab.down(lab.directory, echo=lambda _: None)
        shutil.rmtree(base, ignore_errors=True)
    print()
    for name in ("per-DC workers", "one worker"):
        mine = [m for m in modes if m.name == name]
        shares = [m.share for m in mine]
        per_task = [m.overhead_s / m.task_runs * 1000 for m in mine if m.task_runs]
        per_run = [m.overhead_s / m.runs for m in mine if m.runs]
        tasks_per_run = [m.task_runs / m.runs for m in mine if m.runs]
        print(f"{name}:")
        print(f"  wall time, s:                    {spread(m.wall_s for m in mine)}")
        print(f"  flow run pick-up, s:             {spread(p for m in mine for p in m.pickup_s)}")
        print(f"  task Pending -> Running, s:      {spread(p for m in mine for p in m.pending_s)}")
        waits = [w for m in mine for w in m.slot_wait_s]
        print(f"  slot wait + SSH before snapshot: {spread(waits)}")
        print(f"  task runs per mirror run:        {spread(tasks_per_run)}")
        print(f"  engine overhead per run, s:      {spread(per_run)}")
        print(f"  engine overhead per task, ms:    {spread(per_task)}")
        print(f"  overhead / server runs' time:    {spread(s * 100 for s in shares)} % "
              f"(target <= {TARGET_SHARE:.0%})")  # fmt: skip
        minus = [x for m in mine for x in m.snapshot_task_minus_work_s]
        print(f"  take-snapshots task - its work, s: {spread(minus)}")
        print(f"  load (1 min):                    {spread(m.load for m in mine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
