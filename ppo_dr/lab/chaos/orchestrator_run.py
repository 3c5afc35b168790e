"""Killing the process that runs a mirror of the lab, then seeing a rerun finish it.

The lab mirrors every minute (``mirror-fleet``). The runner takes a run of it that is
running, else starts one (waiting for the schedule cost up to a minute, and on a
loaded machine pushed the CI tier past its limit), waits for one of its processes to
hold a repository's lock (it is writing packs then),
SIGKILLs every local process of that flow run (the flow's own and any upload
workers), waits for Prefect to call it ended, starts a new
run to its end, and checks the fleet: a complete snapshot of every client after the
kill, every home's repositories passing ``verify --read-data``, nothing catalogued
before lost. The judging is
:func:`ppo_dr.lab.chaos.orchestrator.judge_orchestrator_kill`.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ppo_dr.errors import DRError
from ppo_dr.fleet_access import FleetAccess, client_path, mirror_plan
from ppo_dr.inventory import load_fleet
from ppo_dr.lab.chaos import records
from ppo_dr.lab.chaos.catalogue import FaultSpec
from ppo_dr.lab.chaos.fleets import ChaosFleet
from ppo_dr.lab.chaos.flow_runs import FINAL_STATES, FlowRuns
from ppo_dr.lab.chaos.orchestrator import (
    KillObservation,
    flow_run_pids,
    judge_orchestrator_kill,
    lock_pid,
)
from ppo_dr.lab.chaos.verdict import ChaosResult
from ppo_dr.pids import proc_files
from ppo_dr.store import Store
from ppo_dr.waiting import poll

#: A mirror run must start writing a repository within this many seconds of starting.
WRITE_STARTS_S = 90.0
#: Mirror runs tried before the fault gives up catching one writing.
CATCH_TRIES = 3
#: Waits: for the mirror run started (or found running) to run, for Prefect to mark it.
RUN_STARTS_S = 150.0
RUN_ENDS_S = 120.0
#: Reruns until every client is snapshotted again. The killed run's concurrency slots
#: are given back by the first rerun once Prefect calls the killed run ended
#: (``tasks.slots``: the leases are recorded in the store); were that to fail, they
#: would free a lease (60 s) after their last renewal, and reruns before then skip
#: the killed server: reruns go on that long.
RERUN_WITHIN_S = 240.0
RERUN_EVERY_S = 15.0
#: New data written into one client before the mirror run to kill is looked for, so
#: that the run holds its repository's lock for seconds: an incremental of the lab's
#: small clients held it for less than one poll of every repository's lock ("held no
#: repository lock within 90 s"). Random, so neither compression nor dedup shrinks it;
#: removed once the run is killed, so the reruns do not mirror it again (the killed
#: run's packs of it stay behind unreferenced, which the rerun and verify must bear).
BALLAST_BYTES = 32 * 2**20
BALLAST_NAME = ".ppo-dr-chaos-ballast.bin"


@dataclass(frozen=True)
class KillContext:
    """What orchestrator-kill needs of a chaos run."""

    fleet: ChaosFleet
    store: Store
    operator: FlowRuns
    say: Callable[[str], None]
    ready: Callable[[list[str]], None]  # healthy, and a snapshot of each client


def _now() -> datetime:
    return datetime.now(UTC)


def _lock_holders(access: FleetAccess, repos: list[tuple[str, str, str]]) -> dict[int, str]:
    """pid -> the repository whose lock it holds now, over every home's repositories."""
    held = {}
    for home, mirror_id, path in repos:
        try:
            pid = lock_pid(access.remote(mirror_id).read_bytes(posixpath.join(path, "locks/lock")))
        except DRError:
            continue  # no lock now (or the mirror is unreachable for now)
        if pid is not None:
            held[pid] = f"{home}'s repository on {mirror_id}"
    return held


def _catch_writing(
    ctx: KillContext, deployment: str, access: FleetAccess, repos: list[tuple[str, str, str]]
) -> tuple[str, datetime, tuple[list[int], str] | None]:
    """A mirror run (running now, else started here) and, once caught writing, its
    processes and the repository they hold the lock of; None if it ended first (a
    scheduled run found running may be past the ballast's client already, and a short
    run can hold each lock between two looks)."""
    if ctx.operator.running_run(deployment) is None:
        ctx.operator.start_run(deployment, {})
    found = poll(lambda: ctx.operator.running_run(deployment), RUN_STARTS_S, every=1.0)
    if found is None:
        raise DRError(f"no {deployment} run started within {RUN_STARTS_S:.0f} s")
    run_id, started = found

    def writing() -> tuple[list[int], str] | bool | None:
        pids = flow_run_pids(proc_files("environ"), run_id)
        held = _lock_holders(access, repos)
        caught = next(((pids, held[p]) for p in pids if p in held), None)
        if caught is None and ctx.operator.run_state(run_id) in FINAL_STATES:
            return True  # ended uncaught: stop looking
        return caught

    caught = poll(writing, WRITE_STARTS_S, every=0.2)
    return run_id, started, caught if isinstance(caught, tuple) else None


def _kill_a_mirror(
    ctx: KillContext,
    obs: KillObservation,
    access: FleetAccess,
    repos: list[tuple[str, str, str]],
    fresh_ballast: Callable[[], None],
) -> KillObservation:
    """A mirror run (one running now, else one started here), killed while its process
    writes a repository; its end state. A run started beside a scheduled one that began
    meanwhile is cancelled by the deployment's one slot; the scheduled one is taken."""
    for attempt in range(1, CATCH_TRIES + 1):
        fresh_ballast()
        run_id, started, caught = _catch_writing(ctx, obs.what, access, repos)
        if caught is not None:
            break
        if attempt == CATCH_TRIES:
            raise DRError(
                f"run {run_id[:8]} held no repository lock within {WRITE_STARTS_S:.0f} s"
                f" ({CATCH_TRIES} runs tried)"
            )
        ctx.say(f"  {obs.what} run {run_id[:8]} ended before it was caught writing")
    assert caught is not None  # the loop ends caught, or raises
    pids, holding = caught
    running_s = (_now() - started).total_seconds()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    obs = replace(
        obs, killed_at=_now(), killed_pids=len(pids), running_s=running_s, holding=holding
    )
    ctx.say(f"  {obs.what} run {run_id[:8]}: {len(pids)} process(es) SIGKILLed")

    def ended() -> str | None:
        state = ctx.operator.run_state(run_id)
        return state if state in FINAL_STATES else None

    return replace(obs, killed_state=poll(ended, RUN_ENDS_S, every=2.0))


def _rerun(ctx: KillContext, obs: KillObservation, clients: list[str]) -> KillObservation:
    """Mirror runs to their end until every client has a snapshot taken after the kill,
    for at most :data:`RERUN_WITHIN_S`; the row's note says how many it took (one, when
    the first gives back the killed run's slots)."""
    assert obs.killed_at is not None
    ends = time.monotonic() + RERUN_WITHIN_S
    reruns, state = 0, None
    while True:
        state = ctx.operator.run_to_end(obs.what, {})
        reruns += 1
        newest = records.newest_snapshots(ctx.store, clients)
        if all(c in newest and newest[c] >= obs.killed_at for c in clients):
            break
        if state != "COMPLETED" or time.monotonic() > ends:
            break
        time.sleep(RERUN_EVERY_S)
    return replace(obs, rerun_state=state, rerun_done_at=_now(), reruns=reruns)


def exercise_orchestrator_kill(ctx: KillContext, spec: FaultSpec) -> ChaosResult:
    """Kill a mirror run's processes, rerun it, check the repositories; judge.

    The run is the one that mirrors the first client's home: on the loopback lab the
    fleet's mirror (every client), on the distributed lab that server's own mirror
    deployment (its clients only: the others have mirror runs of their own)."""
    store = ctx.store
    model = load_fleet(ctx.fleet.fleet_file)
    placements = {p.client_id: p.server_id for p in store.placements()}
    ctx.ready(sorted(placements))
    deployment = ctx.fleet.mirror_deployment(placements[min(placements)]) if placements else ""
    placements = {
        c: home for c, home in placements.items() if ctx.fleet.mirror_deployment(home) == deployment
    }
    clients = sorted(placements)
    before = records.complete_snapshot_ids(store, clients)
    lost_before = records.lost_writes(model, ctx.fleet.acks_file, clients, ctx.fleet)
    obs = KillObservation(fault=spec.name, what=deployment, clients=tuple(clients))
    ctx.say(f"{spec.name}: a {deployment} run to kill (running, else started now)")
    repos = [
        (home, mirror.id, path)
        for home in sorted(set(placements.values()))
        for mirror, path in mirror_plan(model, home, placements)
    ]
    try:
        if not clients:
            raise DRError("no client to mirror")
        with FleetAccess(model) as access:
            home = placements[clients[0]]
            ballast = posixpath.join(client_path(model, clients[0], placements), BALLAST_NAME)

            def fresh_ballast() -> None:  # new random bytes: an earlier run took the last
                access.remote(home).write_bytes(ballast, os.urandom(BALLAST_BYTES))

            try:
                obs = _kill_a_mirror(ctx, obs, access, repos, fresh_ballast)
            finally:  # its work is done once the run is caught writing it (or not)
                with contextlib.suppress(DRError):
                    access.remote(home).remove(ballast)
            obs = _rerun(ctx, obs, clients)
        ctx.say(f"  killed run ended {obs.killed_state}; {obs.reruns} rerun(s): {obs.rerun_state}")
    except DRError as exc:
        obs = replace(obs, problems=(f"{type(exc).__name__}: {exc}",))
    since = obs.killed_at or _now()
    newest = records.newest_snapshots(store, clients)
    homes = set(placements.values())
    problems = records.verify_repositories(model, homes, placements)
    opened = records.incidents_since(store, since)
    ids = [i.id for i in opened]
    try:
        now_missing = records.lost_writes(model, ctx.fleet.acks_file, clients, ctx.fleet)
        lost: int | None = sum(
            len({s for s, _ in seqs} - {s for s, _ in lost_before.get(c, ())})
            for c, seqs in now_missing.items()
        )
    except DRError as exc:
        lost, obs = None, replace(obs, problems=(*obs.problems, str(exc)))
    obs = replace(
        obs,
        without_new_snapshot=tuple(c for c in clients if c not in newest or newest[c] < since),
        repository_problems=tuple(problems),
        snapshots_intact=before <= records.complete_snapshot_ids(store, clients) and not problems,
        outage_incidents=sum(1 for i in opened if i.kind == "outage"),
        pages=tuple(records.pages_sent(store, ids)),
        notice_keys=tuple(records.outbox_keys(ctx.fleet.outbox(), ids)),
        lost=lost,
    )
    for incident in opened:  # the on-call closes them: the next fault starts quiet
        store.resolve(incident.id, by="chaos", note=f"chaos run: {spec.name} over")
    return judge_orchestrator_kill(spec, obs)
