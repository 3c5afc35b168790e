"""The off-site probe: ONE long-running flow run per period that loops over check cycles.

**probe_fleet(period_s)** — started by its deployment's schedule every period (10 min
with production timings, 2 min with the lab's ``--fast`` ones). A run does not stop
when its period is over: it probes until the next period's run has taken over (see
*Hand-over* below), or for at most three periods. While it holds the probe lease,
every ``timing.probe_interval``:

1. one check cycle over every app server's ``/health`` and every client's health page
   (through the front door: the path users take), concurrently, one aiohttp session
   per vantage for the whole run;
2. :class:`~ppo_dr.probe.runner.ProbeRunner` feeds the state machine, records every
   transition and per-minute counts, derives outages with inhibition, opens each new
   outage's incident idempotently and marks recovered ones;
3. each new paging incident gets its escalation started exactly once
   (``run_deployment("escalation/escalation", idempotency_key="escalation-<id>")``);
   a missing escalation deployment is logged as a warning and put on the incident's
   timeline, and the probe carries on;
4. every :data:`POOL_CHECK_S`, the work pools and their workers are read from the API:
   a pool without an online worker for longer than the outage threshold opens a
   non-paging ``pool-unattended`` incident naming it (nobody runs that DC's mirrors;
   :mod:`ppo_dr.probe.pools`), recovered when a worker is back; a failed read is
   logged and the probe carries on;
5. a heartbeat: the event ``ppo-dr.probe.heartbeat`` and a check counted for the
   pseudo-target ``probe:heartbeat`` in the store.

**Vantages and quorum** (``timing.vantages``): a vantage is a network path out of
the probe: ``direct``, or through an HTTP(S) proxy placed in another network (another
cloud region, another ISP). Every vantage checks every target each cycle; with two or
more, a target counts as failing only if a strict majority of ALL vantages saw it fail
(:func:`~ppo_dr.probe.state.quorum_observation`), so one broken path (a dead proxy,
a bad route from one network) never declares an outage on its own. What it does NOT
cover: every vantage shares this probe process and its host's network, so the host
losing its own uplink fails all of them (that is what running the probe off-site, and
the heartbeat watchdog, are for). Without ``vantages`` the probe checks directly.

**Hand-over** (:mod:`ppo_dr.probe.lease`): under load a flow run starts 45-90 s late,
so a run that stopped at the end of its period left a hole nobody probed. Now runs
overlap, and a lease row in the store names the one run that records. A new run
claims the lease as it starts, waits until the old run has finished its cycle (it sees
the lease gone at its next cycle, flushes its counts and releases), then resumes from
the store (outages in progress, their incidents, escalations not yet started) and
probes: the hole is one probe interval. A holder that died (no renewal for the lease's
time-to-live) is taken over at once; a run older than the holder stands down without
probing. The deployment therefore allows two runs at once (old and successor); a third
is cancelled. A run nobody took over from stops after three periods, releasing the
lease, so a stuck schedule ends in the watchdog's page, not in one run for ever.

**probe_watchdog()** — if the store has no probe heartbeat for two probe periods, it
opens the paging ``probe-silent`` incident and starts its escalation. Two paths run
it, neither depending on the probe: its own short schedule, and a Proactive Prefect
automation that ``ppo-dr serve`` creates (:func:`deployments.automations.
probe_heartbeat_automation`): no ``ppo-dr.probe.heartbeat`` event for two periods →
the server runs this deployment with ``silent_after_s`` of one period (the events
already showed the silence; the store's heartbeat is per minute, so up to a minute
newer). The incident is idempotent, so the two paths page once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from uuid import uuid4

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from ppo_dr import config
from ppo_dr.errors import DRError, InventoryError
from ppo_dr.inventory import Fleet, Timing
from ppo_dr.inventory.watch import FleetFile
from ppo_dr.mirror.runbook import store_url
from ppo_dr.probe.checks import Prober
from ppo_dr.probe.handover import LeaseKeeper
from ppo_dr.probe.lease import Handover, lease_ttl, run_limit_s
from ppo_dr.probe.runner import ESCALATION_STARTED, CycleResult, ProbeRunner
from ppo_dr.store import Store
from tasks import label_flow_run
from tasks.inventory import load_fleet_task
from tasks.probe import (
    check_work_pools,
    emit_probe_heartbeat,
    probe_silence_check,
    start_escalation,
)
from tasks.runs import run_stamp

#: Longest and shortest probe period (one scheduled flow run each).
MAX_PERIOD_S: Final = 600.0
MIN_PERIOD_S: Final = 60.0
#: Failed cycles in a row (store errors) after which the run fails; the next run resumes.
MAX_CYCLE_ERRORS: Final = 10
#: How often the placements (clients move on failover) are re-read, in seconds.
GRAPH_REFRESH_S: Final = 60.0
#: How often the work pools' workers are read from the API, in seconds.
POOL_CHECK_S: Final = 60.0
#: How often a run waiting for the one it took over from looks at the lease, in seconds.
LEASE_POLL_S: Final = 0.5


def probe_period_s(timing: Timing) -> float:
    """One run per 60 probe intervals, between 1 and 10 minutes (10 min at 10 s, 2 min
    at the lab's fast 2 s)."""
    return max(MIN_PERIOD_S, min(MAX_PERIOD_S, 60.0 * float(timing.probe_interval)))


def _scheduled_start() -> datetime:
    """This run's slot in the schedule (its expected start; now for a run without one):
    the lease's rank, so a later slot takes over from an earlier one however late each
    run actually started."""
    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    if run is None or run.expected_start_time is None:
        return datetime.now(UTC)
    # A plain datetime: Prefect's own datetime type loses its zone on the way to SQLite.
    return datetime.fromtimestamp(run.expected_start_time.timestamp(), tz=UTC)


def watchdog_interval_s(timing: Timing) -> float:
    return max(60.0, probe_period_s(timing) / 5)


def _probe_run_name() -> str:
    return f"probe-{run_stamp()}"


def _probers(fleet: Fleet) -> list[Prober]:
    """One prober per vantage of ``timing.vantages`` (one direct prober if none)."""
    timeout = float(fleet.timing.probe_timeout)
    if not fleet.timing.vantages:
        return [Prober(timeout_s=timeout)]
    return [Prober(timeout_s=timeout, vantage=v.id, proxy=v.proxy) for v in fleet.timing.vantages]


async def _escalate(runner: ProbeRunner, incident_id: int) -> None:
    """Start the incident's escalation; never let a failure stop the probe."""
    log = get_run_logger()
    try:
        run_id, why = await start_escalation(incident_id)
    except Exception as exc:  # the API was unreachable through every retry
        why = f"could not start the escalation: {type(exc).__name__}: {exc}"
        log.error("incident %s: %s", incident_id, why)
        runner.escalation_unavailable(incident_id, why)
        return
    if run_id is not None:
        runner.escalation_started(incident_id, run_id)
    else:
        runner.escalation_unavailable(incident_id, why)


async def _check_pools(fleet: Fleet, url: str, run_id: str | None) -> None:
    """Pools nobody serves (non-paging); never let a failure stop the probe."""
    try:
        await check_work_pools(url, float(fleet.timing.outage_threshold), run_id)
    except Exception as exc:  # the API unreachable through every retry
        get_run_logger().error("could not check the work pools: %s: %s", type(exc).__name__, exc)


def _summary_markdown(fleet: Fleet, stats: dict[str, Any]) -> str:
    lines = [
        f"# Probe of {fleet.name}",
        "",
        f"{stats['cycles']} cycle(s) over {stats['targets']} target(s), every "
        f"{fleet.timing.probe_interval} s; slowest cycle {stats['slowest_cycle_s']:.2f} s.",
        f"Transitions recorded: {stats['transitions']}.",
        f"Handed over to: {stats['handed_over_to'] or '(nobody: the run limit or an error)'}.",
        "",
    ]
    if stats["declared"]:
        lines += ["Incidents declared this run:", ""]
        lines += [f"- #{i}: {title}" for i, title in stats["declared"]]
    if stats["recovered"]:
        lines += ["", "Recovered this run: " + ", ".join(f"#{i}" for i in stats["recovered"])]
    if stats["open"]:
        lines += [
            "",
            "Still open at the end: " + ", ".join(f"{k} (#{i})" for k, i in stats["open"]),
        ]
    return "\n".join(lines) + "\n"


async def _log_cycle(runner: ProbeRunner, result: CycleResult, stats: dict[str, Any]) -> None:
    """Log one cycle's transitions, declarations and recoveries; start escalations."""
    log = get_run_logger()
    for t in result.transitions:
        log.info("%s: %s -> %s (%s)", t.target_id, t.from_state, t.to_state, t.reason)
    for d in result.declared:
        note = f" (suppressed by maintenance window {d.window.id})" if d.window else ""
        log.warning(
            "incident #%s %s: %s%s",
            d.incident.id,
            "opened" if d.created else "found open",
            d.incident.title,
            note,
        )
        if d.created:
            stats["declared"].append((d.incident.id, d.incident.title))
        if d.escalate:
            await _escalate(runner, d.incident.id)
    for incident in result.spares_down:
        log.warning("incident #%s opened (not paging): %s", incident.id, incident.title)
        stats["declared"].append((incident.id, incident.title))
    for incident in result.recovered:
        log.info("incident #%s recovered: %s", incident.id, incident.title)
        stats["recovered"].append(incident.id)


async def _take_over(keeper: LeaseKeeper, interval: float) -> bool:
    """Claim the probe lease and wait while the run taken over from finishes its cycle;
    False: a newer run holds the lease, this one must not probe."""
    log = get_run_logger()
    state = keeper.claim()
    if state is Handover.WAIT and keeper.lease is not None:
        log.info(
            "took the probe lease over from run %s: waiting for its last cycle",
            keeper.lease.previous,
        )
    while state is Handover.WAIT:
        await asyncio.sleep(min(LEASE_POLL_S, interval / 4))
        state = keeper.renew()
    if state is Handover.STAND_DOWN:
        keeper.release()  # a newer run may be waiting for this one: it need not
        log.info("probe run %s holds the probe lease: standing down", keeper.successor)
        return False
    return True


@flow(name="probe-fleet", flow_run_name=_probe_run_name, timeout_seconds=2 * 3600)
async def probe_fleet(
    period_s: float | None = None,
    fleet_file: Path | None = None,
    front_door: str | None = None,
    run_for_s: float | None = None,
) -> dict[str, Any]:
    """Probe every app server and client every probe interval until the next run takes
    over (see *Hand-over* in the module).

    Args:
        period_s: the schedule's period (default from the fleet's timing: 60 probe
            intervals, 1-10 min).
        fleet_file: the fleet file; default ``$PPO_DR_FLEET`` or the lab's.
        front_door: check clients at ``<front_door>/c/<client>/health`` (the lab's
            front door) instead of ``<client url>/health``.
        run_for_s: the longest this run probes if no run takes over (default three
            periods); it releases the lease then.
    """
    log = get_run_logger()
    path = fleet_file or config.fleet_file()
    fleet = load_fleet_task(path)
    timing = fleet.timing
    interval = float(timing.probe_interval)
    period = float(period_s) if period_s else probe_period_s(timing)
    label_flow_run(tags=[f"fleet:{fleet.name}", "probe"])
    run_id = str(flow_run.id) if flow_run.id else None
    deadline = time.monotonic() + (float(run_for_s) if run_for_s else run_limit_s(period))
    stats: dict[str, Any] = {
        "cycles": 0,
        "targets": 0,
        "transitions": 0,
        "slowest_cycle_s": 0.0,
        "declared": [],
        "recovered": [],
        "open": [],
        "first_cycle_at": None,
        "last_cycle_at": None,
        "handed_over_to": None,
    }
    with Store(store_url(fleet)) as store:
        keeper = LeaseKeeper(
            store,
            run_id or f"probe-{uuid4()}",
            _scheduled_start(),
            lease_ttl(interval, float(timing.probe_timeout)),
        )
        if not await _take_over(keeper, interval):
            stats["handed_over_to"] = keeper.successor
            return stats
        runner = ProbeRunner(fleet, store, flow_run_id=run_id, front_door=front_door)
        try:
            runner.seed()
            if runner.open_outages:
                log.info("resuming with open outage(s): %s", runner.open_outages)
            for incident in runner.pending_escalations():
                log.warning("incident %s has no escalation recorded yet: starting it", incident.id)
                await _escalate(runner, incident.id)
            watched = FleetFile(path, fleet)
            await _probe_until_handed_over(watched, runner, keeper, deadline, stats)
        finally:
            try:
                runner.flush_minutes()
            finally:
                keeper.release()  # after the flush: the successor seeds from what is stored
            stats["open"] = sorted(runner.open_outages.items())
            stats["handed_over_to"] = keeper.successor
    if stats["handed_over_to"]:
        log.info("handed the probe over to run %s", stats["handed_over_to"])
    await acreate_markdown_artifact(
        key=f"probe-{fleet.name}",
        markdown=_summary_markdown(fleet, stats),
        description=f"Probe run of {fleet.name}: cycles, incidents declared and recovered",
    )
    return stats


async def _probe_until_handed_over(
    watched: FleetFile,
    runner: ProbeRunner,
    keeper: LeaseKeeper,
    deadline: float,
    stats: dict[str, Any],
) -> None:
    """Check cycles every probe interval while this run holds the lease, until *deadline*.

    The fleet file is looked at every cycle: servers provisioned or released since the
    run began are probed or forgotten from the next cycle on (vantages and timing stay
    the run's own until the next run).
    """
    log = get_run_logger()
    fleet = watched.fleet
    interval = float(fleet.timing.probe_interval)
    run_id = runner.flow_run_id
    checks = runner.checks()
    refreshed = time.monotonic()
    pools_checked = -POOL_CHECK_S
    errors = 0
    async with contextlib.AsyncExitStack() as stack:
        probers = [await stack.enter_async_context(p) for p in _probers(fleet)]
        while True:
            cycle_start = time.monotonic()
            try:
                if keeper.renew() is not Handover.PROBE:
                    return  # the next run took over: it records from now on
                if _fleet_changed(watched, runner):
                    checks = runner.checks()
                    refreshed = cycle_start
                if cycle_start - refreshed >= GRAPH_REFRESH_S:
                    runner.refresh_graph()
                    checks = runner.checks()
                    refreshed = cycle_start
                if cycle_start - pools_checked >= POOL_CHECK_S:
                    await _check_pools(fleet, store_url(fleet), run_id)
                    pools_checked = cycle_start
                batches = await asyncio.gather(*(p.run_cycle(checks) for p in probers))
                result = runner.cycle([o for batch in batches for o in batch])
                errors = 0
            except DRError as exc:  # e.g. the store busy: the next cycle retries
                errors += 1
                log.error("cycle failed (%s in a row): %s", errors, exc)
                if errors >= MAX_CYCLE_ERRORS:
                    raise
                await asyncio.sleep(interval)
                continue
            took = time.monotonic() - cycle_start
            stats["cycles"] += 1
            stats["targets"] = len(checks)
            stats["transitions"] += len(result.transitions)
            stats["slowest_cycle_s"] = max(stats["slowest_cycle_s"], took)
            stats["first_cycle_at"] = stats["first_cycle_at"] or result.at.isoformat()
            stats["last_cycle_at"] = result.at.isoformat()
            await _log_cycle(runner, result, stats)
            runner.heartbeat()
            emit_probe_heartbeat(
                fleet.name,
                {
                    "cycle": stats["cycles"],
                    "targets": len(checks),
                    "failing": len(result.down),
                    "cycle_s": round(took, 3),
                    "open_outages": len(runner.open_outages),
                },
            )
            next_at = cycle_start + interval
            if next_at >= deadline:
                return
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def _fleet_changed(watched: FleetFile, runner: ProbeRunner) -> bool:
    """Hand the runner the fleet file's new version, if it changed; whether it did. An
    invalid version is logged once and the run goes on with the last good fleet."""
    log = get_run_logger()
    try:
        fleet = watched.reread()
    except InventoryError as exc:
        log.error("fleet file changed but is not valid; probing the last good one: %s", exc)
        return False
    if fleet is None:
        return False
    forgotten = runner.use_fleet(fleet)
    log.info(
        "fleet file changed: %d servers, %d clients now%s",
        len(fleet.servers),
        len(fleet.clients),
        f"; no longer probed: {', '.join(forgotten)}" if forgotten else "",
    )
    return True


def _watchdog_run_name() -> str:
    return f"probe-watchdog-{run_stamp()}"


@flow(name="probe-watchdog", flow_run_name=_watchdog_run_name, timeout_seconds=300)
async def probe_watchdog(
    silent_after_s: float | None = None, fleet_file: Path | None = None
) -> dict[str, Any]:
    """Page (``probe-silent`` incident + escalation) if the probe stopped heartbeating.

    Args:
        silent_after_s: silence that pages; default two probe periods.
        fleet_file: the fleet file; default ``$PPO_DR_FLEET`` or the lab's.
    """
    log = get_run_logger()
    path = fleet_file or config.fleet_file()
    fleet = load_fleet_task(path)
    silent_after = float(silent_after_s) if silent_after_s else 2 * probe_period_s(fleet.timing)
    run_id = str(flow_run.id) if flow_run.id else None
    url = store_url(fleet)
    incident_id, created = probe_silence_check(url, silent_after, run_id)
    if incident_id is None:
        return {"silent": False}
    log.error("the probe has not heartbeated for %.0f s: incident #%s", silent_after, incident_id)
    with Store(url) as store:
        runner = ProbeRunner(fleet, store, flow_run_id=run_id)
        started = any(e.kind == ESCALATION_STARTED for e in store.timeline(incident_id))
        if not started:
            await _escalate(runner, incident_id)
    return {"silent": True, "incident_id": incident_id, "created": created}
