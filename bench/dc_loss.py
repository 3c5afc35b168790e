"""Benchmark: the loss of the largest data centre at scale, declaration -> every client healthy.

Each run brings up a distributed lab of its own (as root: DCs in network namespaces,
the HA control plane, a worker per DC pool, two ``control`` workers; ``--fast``
timings, the escalation's ``auto_failover`` on), mirrors every app server once on its
DC's worker, waits for the probe, then cuts the power of the data centre with the
most clients (``lab break DC --fault power``: its servers and its worker). From the
cut on, a watcher in the ``wan`` namespace checks every lost client's health page
through the front door with the probe's own :class:`~ppo_dr.probe.Prober`; "healthy"
is the first cycle in which every one answers 200 (the old home is dead, so a 200
comes from the new one).

With ``--kill``, once the first client's restore has begun, the bench also SIGKILLs
API server ``api-1`` and the ``control`` worker running the failover's orchestration
together with that run's process (its host lost power): the engine marks the run
Crashed, the rerun automation schedules it again and the other control worker finishes
the plan.

Printed per run: the phases from the store and the watcher, in seconds after the
declaration (detected, declared, planned, the last client done of each failover step,
healthy), the ratio of declaration -> healthy to the target (5 minutes; 6 with
``--kill``), the pick-up and running times of the ``fail-over-clients`` runs (one per
target server, its clients threads of the run), and whether anything was done twice
(restores begun per client, batch runs per client, incidents of the DC).

    PYTHONPATH=. .venv/bin/python -m bench.dc_loss --scale 28x25 --size 2800 [--kill]

``28x25`` puts 10 app servers and 250 clients in jhb1 (the first four app servers
are the classic lab's, the rest go round the DCs); ``--size`` is the whole fleet's
data, so 2,800 MiB is ~1 GB in jhb1. Not run by CI: a lab at that scale takes
several minutes to come up on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments import distributed_lab
from deployments.demo import dc_loss
from deployments.demo.session import prefect_api
from deployments.demo.waiting import wait_for
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab import controlplane, netns, pid_identity
from ppo_dr.lab.supervisor import Lab
from ppo_dr.lab.topology import parse_scale
from ppo_dr.probe import HttpCheck, Prober
from ppo_dr.probe.runner import client_health_url
from ppo_dr.store import Store

#: Declaration -> every client healthy through the front door (issue 9, item 5).
TARGET_S = {False: 300.0, True: 360.0}
#: Waits sized for a lab of hundreds of clients on a shared 2-core machine.
SCALE_WAIT_S = 1800.0
WATCH_EVERY_S = 2.0
CHECK_TIMEOUT_S = 5.0


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass
class Watcher:
    """Checks the lost clients through the front door from the wan until all answer."""

    lab: Lab
    fleet: Fleet
    clients: list[str]
    healthy_at: datetime | None = None
    cycles: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        net = self.lab.network()
        wan = net.wan if net else None
        thread = threading.Thread(
            target=lambda: netns.call_in(wan, lambda: asyncio.run(self._watch())),
            name="dc-loss-watcher",
            daemon=True,
        )
        thread.start()
        return thread

    async def _watch(self) -> None:
        checks = [
            HttpCheck(c, client_health_url(str(self.fleet.client(c).url))) for c in self.clients
        ]
        async with Prober(timeout_s=CHECK_TIMEOUT_S) as prober:
            while not self.stop.is_set():
                began = time.monotonic()
                observations = await prober.run_cycle(checks)
                self.cycles += 1
                if all(o.ok for o in observations):
                    self.healthy_at = datetime.now(UTC)
                    return
                await asyncio.sleep(max(0.0, WATCH_EVERY_S - (time.monotonic() - began)))


@dataclass
class RunResult:
    """One DC loss: the phases (UTC) and what was done how often."""

    dc: str
    clients: int
    phases: dict[str, datetime]
    restores_begun: dict[str, int]
    runs: BatchRuns
    incidents: int
    failover_state: str
    failover_detail: str
    median_rto_s: float | None
    load: tuple[float, float, float]
    kills: list[str] = field(default_factory=list)

    def from_declaration(self, phase: str) -> float | None:
        if phase not in self.phases:
            return None
        return (self.phases[phase] - self.phases["declared"]).total_seconds()

    @property
    def done_twice(self) -> list[str]:
        twice = [f"{c}: restore begun {n}x" for c, n in self.restores_begun.items() if n != 1]
        twice += [f"{c}: in {n} batch runs" for c, n in self.runs.per_client.items() if n != 1]
        if self.incidents != 1:
            twice.append(f"{self.incidents} incidents of {self.dc}")
        return twice


def largest_dc(lab: Lab, fleet: Fleet) -> tuple[str, list[str]]:
    """The data centre whose app servers hold the most clients, and those clients."""
    by_dc: dict[str, list[str]] = {}
    with Store.open(lab.store_url) as store:
        for placement in store.placements():
            by_dc.setdefault(fleet.server(placement.server_id).dc, []).append(placement.client_id)
    dc = max(by_dc, key=lambda d: (len(by_dc[d]), d))
    return dc, sorted(by_dc[dc])


def _failover_run(api_url: str, incident_id: int) -> Any:
    """The incident's failover run as it is now (None before the escalation starts it)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    from deployments.demo.session import first_run_of

    tagged = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"incident:{incident_id}"]))
    with prefect_api(api_url) as client:
        return first_run_of(client, "failover", tagged)


def _ended(api_url: str, incident_id: int) -> Any:
    """The failover run once Completed, Failed or Cancelled; Crashed is not the end
    here: the engine's rerun automation schedules it again."""
    try:
        run = _failover_run(api_url, incident_id)
    except Exception:  # an API server was killed: HAProxy moves on, the next poll works
        return None
    state = run.state if run is not None else None
    if state is None or not state.is_final() or state.is_crashed():
        return None
    return run


def kill_mid_failover(lab: Lab, api_url: str, incident_id: int, plan_id: str) -> list[str]:
    """Once a restore has begun: SIGKILL api-1, and the control worker orchestrating the
    failover with the run's own process (a power loss of its host); what was killed."""
    with Store.open(lab.store_url) as store:
        wait_for(
            "the first restore to begin",
            lambda: any(s.step == "restore" for s in store.failover_steps(plan_id)),
            SCALE_WAIT_S,
            every=0.5,
        )
    run = _failover_run(api_url, incident_id)
    worker = run.labels[dc_loss.WORKER_LABEL]
    flow_pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
    api_pid = controlplane.kill(distributed_lab.control_plane_dir(lab.directory), "api-1")
    for pid in (lab.recorded_pids()[worker], flow_pid):
        pid_identity.signal_group(pid, signal.SIGKILL)
    return [f"api-1 (pid {api_pid})", f"worker {worker}", f"failover run process {flow_pid}"]


@dataclass
class BatchRuns:
    """The ``fail-over-clients`` runs moving the lost clients, as the API lists them."""

    runs: int
    per_client: dict[str, int]  # how many batch runs each lost client was in
    pickup_s: list[float]  # scheduled -> running: the worker's poll and the process start
    running_s: list[float]  # running -> ended
    most_at_once: int

    def line(self) -> str:
        def med(values: list[float]) -> str:
            if not values:
                return "-"
            return f"{statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})"

        return (
            f"batch runs: {self.runs} for {sum(self.per_client.values())} clients; "
            f"pick-up {med(self.pickup_s)}, running {med(self.running_s)}, "
            f"at most {self.most_at_once} running at once"
        )


@contextlib.contextmanager
def mirror_schedules_paused(api_url: str) -> Iterator[list[str]]:
    """The fleet's scheduled mirror deployments paused while the block runs, then resumed.

    The ``--fast`` lab mirrors every server every few minutes; during the full first
    mirror of 28 servers those runs queued behind it (149 at once, load ~25) and it had
    done 14 of 28 after 20 minutes. Pausing drops their auto-scheduled runs; the
    schedules are on again for the outage, as in production.
    """
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with prefect_api(api_url) as client:
        paused = [
            d
            for d in client.read_deployments(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["mirror-server", "mirror-fleet"]))
            )
            if not d.paused
        ]
        for deployment in paused:
            client.pause_deployment(deployment.id)
    try:
        yield [d.name for d in paused]
    finally:
        with prefect_api(api_url) as client:
            for deployment in paused:
                client.resume_deployment(deployment.id)


def batch_runs(api_url: str, victims: list[str]) -> BatchRuns:
    """Every ``fail-over-clients`` run moving *victims*: how many runs each client was
    in, and the runs' times."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    counts = dict.fromkeys(victims, 0)
    runs = 0
    pickup: list[float] = []
    running: list[float] = []
    edges: list[tuple[datetime, int]] = []
    with prefect_api(api_url) as client:
        offset = 0
        while True:
            page = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["fail-over-clients"])),
                limit=200,
                offset=offset,
            )
            for run in page:
                moved = [m.get("client_id") for m in run.parameters.get("moves") or []]
                if not any(client in counts for client in moved):
                    continue
                runs += 1
                for client in moved:
                    if client in counts:
                        counts[client] += 1
                if run.start_time and run.expected_start_time:
                    pickup.append((run.start_time - run.expected_start_time).total_seconds())
                if run.start_time and run.end_time:
                    running.append((run.end_time - run.start_time).total_seconds())
                    edges += [(run.start_time, 1), (run.end_time, -1)]
            if len(page) < 200:
                break
            offset += 200
    now = most = 0
    for _at, step in sorted(edges):
        now += step
        most = max(most, now)
    return BatchRuns(runs, counts, pickup, running, most)


def phases_from_store(store: Store, incident_id: int, plan_id: str) -> dict[str, datetime]:
    """detected, declared, planned, the last client done of each step, failover ended."""
    incident = store.incident(incident_id)
    assert incident is not None
    phases = {"declared": _utc(incident.opened_at)}
    for entry in store.timeline(incident_id):
        if entry.kind == "first-failure":
            phases.setdefault("detected", _utc(entry.at))
    failover = store.failover(plan_id)
    if failover is not None:
        phases["planned"] = _utc(failover.started_at)
        if failover.finished_at is not None:
            phases["failover ended"] = _utc(failover.finished_at)
    last: dict[str, datetime] = {}
    for step in store.failover_steps(plan_id):
        if step.finished_at is not None and step.state == "done":
            at = _utc(step.finished_at)
            last[step.step] = max(last.get(step.step, at), at)
    phases.update({f"step {name} (last client)": at for name, at in last.items()})
    return phases


def one_run(
    base: Path, apps: int, per: int, size_mb: int, kill: bool, say: Callable[[str], None]
) -> RunResult:
    """A fresh lab, one DC lost (see the module docstring); the lab goes down after."""
    lab = Lab(base / "lab")
    began = time.monotonic()
    try:
        distributed_lab.lab_up(
            lab, echo=say, clients=apps * per, size_mb=size_mb, fast=True,
            timeout=SCALE_WAIT_S, app_servers=apps,
        )  # fmt: skip
        dc_loss.turn_on_auto_failover(lab)
        made = distributed_lab.start_prefect(lab, timeout=SCALE_WAIT_S, echo=say)
        say(f"lab and Prefect up in {time.monotonic() - began:.0f} s")
        fleet = load_fleet(lab.fleet_file)
        mirrored = time.monotonic()
        with mirror_schedules_paused(made.api_url) as paused:
            say(f"mirror schedules paused for the first mirror: {len(paused)}")
            dc_loss.mirror_every_app_server(made.api_url, fleet, say=lambda _: None)
        say(f"every app server mirrored in {time.monotonic() - mirrored:.0f} s; schedules on")
        dc_loss.wait_for_probe(made.api_url)
        dc, victims = largest_dc(lab, fleet)
        watcher = Watcher(lab, fleet, victims)
        say(f"cutting the power of {dc}: {len(victims)} clients")
        lab.break_(dc, "power")
        cut = datetime.now(UTC)
        watching = watcher.start()
        kills: list[str] = []
        with Store.open(lab.store_url) as store:
            incident = wait_for(
                f"the {dc} incident", lambda: dc_loss.dc_incidents(store, dc), SCALE_WAIT_S
            )[0]
            after = (_utc(incident.opened_at) - cut).total_seconds()
            say(f"incident #{incident.id} declared {after:.0f} s after the cut")
            plan_id = wait_for(
                "the failover's plan",
                lambda: store.failovers(incident_id=incident.id),
                SCALE_WAIT_S,
            )[0].plan_id
            if kill:
                kills = kill_mid_failover(lab, made.api_url, incident.id, plan_id)
                say(f"killed mid-failover: {', '.join(kills)}")
            run = wait_for(
                "the failover run's end",
                lambda: _ended(made.api_url, incident.id),
                SCALE_WAIT_S,
                every=2.0,
            )
            watching.join(SCALE_WAIT_S)
            watcher.stop.set()
            phases = {"cut": cut, **phases_from_store(store, incident.id, plan_id)}
            if watcher.healthy_at is not None:
                phases["healthy"] = watcher.healthy_at
            restores = dict.fromkeys(victims, 0)
            for step in store.failover_steps(plan_id):
                if step.step == "restore" and step.client_id in restores:
                    restores[step.client_id] = step.attempts
            record = store.failover(plan_id)
            ended_detail = f"{record.state}: {record.detail}" if record else "no record"
            failed = [
                f"{s.client_id} {s.step}: {s.detail}"
                for s in store.failover_steps(plan_id)
                if s.state not in ("done", "running")
            ]
            ended_detail += f"; steps not done: {failed[:5] or 'none'}"
            rtos = [r.rto_seconds for r in store.failover_results(plan_id) if r.rto_seconds]
            incidents = len(dc_loss.dc_incidents(store, dc))
        return RunResult(
            dc=dc,
            clients=len(victims),
            phases=phases,
            restores_begun=restores,
            runs=batch_runs(made.api_url, victims),
            incidents=incidents,
            failover_state=run.state.name,
            failover_detail=f"{run.state.message or ''} | store: {ended_detail}",
            median_rto_s=statistics.median(rtos) if rtos else None,
            load=os.getloadavg(),
            kills=kills,
        )
    finally:
        distributed_lab.down(lab.directory, echo=lambda _: None)


def report(result: RunResult, kill: bool) -> None:
    """The phases, the ratio to the target, and anything done twice."""
    print(f"\n{result.dc} lost: {result.clients} clients; failover {result.failover_state}")
    if result.failover_state != "Completed":
        print(f"  why: {result.failover_detail[:1500]}")
    if result.kills:
        print(f"killed mid-failover: {', '.join(result.kills)}")
    for name, at in sorted(result.phases.items(), key=lambda item: item[1]):
        print(f"  {name:34} {at:%H:%M:%S}  {result.from_declaration(name):+8.1f} s")
    healthy = result.from_declaration("healthy")
    target = TARGET_S[kill]
    if healthy is None:
        print(f"declaration -> every client healthy: NOT REACHED (target {target:.0f} s)")
    else:
        print(
            f"declaration -> every client healthy: {healthy:.1f} s, "
            f"{healthy / target:.2f}x the {target:.0f} s target"
        )
    print(result.runs.line())
    if result.median_rto_s is not None:
        print(f"median RTO the runbook recorded per client: {result.median_rto_s:.1f} s")
    twice = result.done_twice
    print(f"done twice: {', '.join(twice) if twice else 'nothing'}")
    print(f"load average (1, 5, 15 min) at the end: {result.load}")


def _prefixed(prefix: str) -> Callable[[str], None]:
    return lambda message: print(f"{prefix}{message}", flush=True)


def wait_longer_at_scale(seconds: float = SCALE_WAIT_S) -> None:
    """The story's waits fit its four app servers; at scale the first mirror of 50 did
    not complete one run in its 300 s (load ~40), so every wait gets *seconds*, and the
    full first mirror twice that (28 servers, 2.8 GB: 23 done after 27 minutes)."""
    for name in ("PROBE_TIMEOUT_S", "DECLARE_TIMEOUT_S", "FAILOVER_TIMEOUT_S"):
        setattr(dc_loss, name, seconds)
    dc_loss.MIRROR_TIMEOUT_S = 2 * seconds


def scale_options(parser: argparse.ArgumentParser, scale: str, size_mb: int) -> None:
    """``--scale`` and ``--size``, as ``ppo-dr lab up`` takes them."""
    parser.add_argument("--scale", default=scale, help="APPSxCLIENTS, as lab up --scale")
    parser.add_argument("--size", type=int, default=size_mb, help="MiB of client data in all")


def lab_scale(args: argparse.Namespace) -> tuple[int, int] | None:
    """(app servers, clients each) from ``--scale``, the waits set for it; None (said
    why) where network namespaces cannot be made."""
    if (reason := netns.unavailable_reason()) is not None:
        print(f"needs network namespaces: {reason}", file=sys.stderr)
        return None
    wait_longer_at_scale()
    return parse_scale(args.scale)


def reachable_dir(prefix: str) -> Path:
    """A fresh directory the control plane's PostgreSQL (user postgres) can reach."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    return base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scale_options(parser, "28x25", 2800)  # 250 clients, ~1 GB in jhb1
    parser.add_argument("--kill", action="store_true", help="kill api-1 and a control worker")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if (scale := lab_scale(args)) is None:
        return 2
    apps, per = scale
    results: list[RunResult] = []
    for n in range(1, args.runs + 1):
        base = reachable_dir("ppo-dr-bench-dcloss-")
        started = time.monotonic()
        try:
            result = one_run(
                base,
                apps,
                per,
                args.size,
                args.kill,
                say=_prefixed(f"  [{n}] "),
            )
        finally:
            shutil.rmtree(base, ignore_errors=True)
        print(f"run {n}: {time.monotonic() - started:.0f} s in all (load {os.getloadavg()[0]:.1f})")
        report(result, args.kill)
        results.append(result)
    healthy = [h for r in results if (h := r.from_declaration("healthy")) is not None]
    if len(results) > 1 and healthy:
        print(
            f"\ndeclaration -> healthy over {len(results)} runs: median "
            f"{statistics.median(healthy):.1f} s ({min(healthy):.1f}-{max(healthy):.1f}, "
            f"reached in {len(healthy)})"
        )
    ok = len(healthy) == len(results) and not any(r.done_twice for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
