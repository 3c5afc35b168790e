"""The failover half of ``orchestrator-kill``: the process running a failover, killed
mid-restore, then the same flow run scheduled again, as an operator (or ``ppo-dr
deploy``'s "rerun a crashed failover" automation) would.

Called by the runner between the plan's approval and the failover's end, on a power
cut like the ``power`` fault: it waits until a client's restore step has begun in the
ledger, SIGKILLs every local process of the failover's flow run (its client runs are
subflows of the same process), waits for Prefect to call it ended, sets the same run
Scheduled again (the same run id, so :func:`tasks.failover.plan_begun_by_run` finds
its plan and the ledger skips what was done; approved again if the rerun pauses),
and waits for the failover to end. The ledger rules are
:func:`ppo_dr.lab.chaos.orchestrator.ledger_problems`; the outage rules are the
``power`` fault's.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ppo_dr.escalation import failover_view
from ppo_dr.lab.chaos.flow_runs import FINAL_STATES, FlowRuns
from ppo_dr.lab.chaos.orchestrator import (
    KILLED_STATES,
    LedgerRow,
    flow_run_pids,
    ledger_problems,
)
from ppo_dr.pids import proc_files
from ppo_dr.store import Store
from ppo_dr.waiting import poll

#: The failover ledger's states that end a failover.
FAILOVER_ENDED = ("done", "partial", "failed")
#: Waits: for a restore to begin after the approval, for Prefect to mark the killed run.
RESTORE_BEGINS_S = 300.0
RUN_ENDS_S = 120.0


@dataclass(frozen=True)
class FailoverKill:
    """What the kill needs of the chaos run, and what it saw (``summary``, ``problems``)."""

    store: Store
    operator: FlowRuns
    approve: Callable[[str], None]
    say: Callable[[str], None]
    wait_s: float  # for the rerun's failover to end
    said: list[str] = field(default_factory=list)  # what happened, for the row's notes


def _ledger(store: Store, plan_id: str) -> list[LedgerRow]:
    return [(s.client_id, s.step, s.state, s.attempts) for s in store.failover_steps(plan_id)]


def kill_failover_midway(kill: FailoverKill, incident_id: int, plan_id: str) -> list[str]:
    """Kill the incident's failover run once a restore has begun, rerun it, wait for the
    failover's end; the ledger's problems (empty: held), a summary said as progress."""
    store, say = kill.store, kill.say
    run_id = failover_view(store.timeline(incident_id)).run_id
    if run_id is None:
        return ["the incident's timeline names no failover run to kill"]

    def restoring() -> list[LedgerRow] | None:
        rows = _ledger(store, plan_id)
        begun = any(s == "restore" and st in ("running", "done") for _, s, st, _ in rows)
        return rows if begun else None

    if poll(restoring, RESTORE_BEGINS_S, every=0.2) is None:
        return [f"no restore of plan {plan_id[:12]} began within {RESTORE_BEGINS_S:.0f} s"]
    pids = flow_run_pids(proc_files("environ"), run_id)
    killed_at = datetime.now(UTC)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    at_kill = _ledger(store, plan_id)
    if not pids:
        return [f"no local process of failover run {run_id[:8]} to kill"]
    restoring_now = sorted({c for c, s, st, _ in at_kill if s == "restore"})
    say(f"  failover run {run_id[:8]}: {len(pids)} process(es) SIGKILLed")

    def ended() -> str | None:
        since = [name for name, at in kill.operator.run_history(run_id) if at >= killed_at]
        return next((name for name in since if name in FINAL_STATES), None)

    problems = []
    killed_state = poll(ended, RUN_ENDS_S, every=2.0)
    if killed_state not in KILLED_STATES:
        problems.append(f"the killed failover run ended {killed_state or 'not in time'}")
    by_automation = kill.operator.run_state(run_id) not in FINAL_STATES
    if not by_automation:
        kill.operator.rerun(run_id)
    asked_again: list[bool] = []

    def finished() -> str | None:
        record = store.failover(plan_id)
        if record is not None and record.state in FAILOVER_ENDED:
            return record.state
        if not asked_again and kill.operator.run_state(run_id) == "PAUSED":
            asked_again.append(True)  # the rerun's pause is a new one: the on-call answers
            kill.approve(plan_id)
        return None

    state = poll(finished, kill.wait_s, every=2.0)
    kill.said.append(
        f"failover run killed ({len(pids)} process(es)) during the restore of "
        f"{', '.join(restoring_now)}; it ended {killed_state}; the same run rescheduled"
        f"{' by the deploy automation' if by_automation else ''}"
        f"{', asked for approval again (approved)' if asked_again else ''}: "
        f"failover {state or 'not finished in time'}"
    )
    say(f"  {kill.said[-1]}")
    record = store.failover(plan_id)
    before = {c: int(v) for c, v in (record.placement_versions if record else {}).items()}
    after = {p.client_id: p.version for p in store.placements()}
    return problems + ledger_problems(at_kill, _ledger(store, plan_id), before, after)
