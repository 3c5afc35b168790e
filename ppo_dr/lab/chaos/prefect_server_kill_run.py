"""Killing the chaos run's Prefect server mid-failover, and resuming what it broke.

Once the failover's restore has begun for a client, the Prefect server serve runs is
SIGKILLed (its whole process group), left dead for
:data:`~ppo_dr.lab.chaos.prefect_server_kill.API_DOWN_S` and started again on the
same port and database (:class:`PrefectServer`, implemented by ``cli/chaos.py``:
``ppo_dr`` does not start Prefect). Then the failover is followed to its end. A run
that died meanwhile (Prefect calls it ended, or no local process carries its id any
more while the store still has the failover running) is resumed as the on-call
would: the failover deployment run again with the stored plan, approved.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from ppo_dr.errors import LabError
from ppo_dr.escalation import failover_view
from ppo_dr.lab.chaos.flow_runs import FINAL_STATES, FlowRuns
from ppo_dr.lab.chaos.orchestrator import flow_run_pids
from ppo_dr.lab.chaos.prefect_server_kill import API_DOWN_S, RESTORE_STEP, PrefectKillFacts
from ppo_dr.pids import proc_files
from ppo_dr.store import Store
from ppo_dr.waiting import poll

FAILOVER_DEPLOYMENT = "failover/failover"
#: Approval to the first client's restore beginning.
RESTORE_BEGINS_S = 600.0
#: How often the failover is looked at after the restart.
_EVERY_S = 3.0
#: The failover's ends that the store records.
_ENDED = ("done", "partial", "failed")


@runtime_checkable
class PrefectServer(Protocol):
    """The served Prefect server, as a fault can kill and start it."""

    def restart_server(self, down_s: float) -> None:
        """SIGKILL the server (its process group), keep it down *down_s* seconds, start
        it again on the same port and database; return once it answers."""
        ...


@dataclass(frozen=True)
class KillApiContext:
    """What prefect-server-kill needs of a chaos run."""

    store: Store
    operator: FlowRuns
    say: Callable[[str], None]
    limit_s: float  # the failover's own limit


def _now() -> datetime:
    return datetime.now(UTC)


def kill_api_mid_failover(
    ctx: KillApiContext, incident_id: int, plan_id: str, injected_at: datetime
) -> PrefectKillFacts:
    """Kill and restart the API once the restore began; follow (or resume) the failover."""
    facts = PrefectKillFacts(injected_at=injected_at)
    server = ctx.operator
    if not isinstance(server, PrefectServer):
        return replace(facts, problems=("this chaos run cannot kill its Prefect server",))

    def restoring() -> bool:
        return any(s.step == RESTORE_STEP for s in ctx.store.failover_steps(plan_id))

    if not poll(restoring, RESTORE_BEGINS_S, every=1.0):
        return replace(facts, problems=(f"no restore began within {RESTORE_BEGINS_S:.0f} s",))
    facts = replace(facts, killed_at=_now())
    ctx.say(f"  killing the Prefect server mid-restore; starting it again {API_DOWN_S:.0f} s on")
    try:
        server.restart_server(API_DOWN_S)
    except LabError as exc:
        return replace(facts, problems=(f"the Prefect server did not start again: {exc}",))
    facts = replace(facts, back_at=_now())
    ctx.say("  Prefect server answers again; following the failover")
    return _follow(ctx, facts, incident_id, plan_id)


def _follow(
    ctx: KillApiContext, facts: PrefectKillFacts, incident_id: int, plan_id: str
) -> PrefectKillFacts:
    """Wait for the failover's end; resume its plan once if its run died."""
    run_id = failover_view(ctx.store.timeline(incident_id)).run_id
    ends = time.monotonic() + ctx.limit_s
    while time.monotonic() < ends:
        record = ctx.store.failover(plan_id)
        if record is not None and record.state in _ENDED:
            return replace(facts, failover_ended_at=record.finished_at)
        state = ctx.operator.run_state(run_id) if run_id else "UNKNOWN"
        alive = bool(run_id and flow_run_pids(proc_files("environ"), run_id))
        if not alive:  # read again: it may have ended between the two looks
            record = ctx.store.failover(plan_id)
            if record is not None and record.state in _ENDED:
                continue
        if record is not None and not facts.resumed and (state in FINAL_STATES or not alive):
            ctx.say(f"  the failover run ended {state} (process alive: {alive}): resuming it")
            parameters = {
                "plan_json": json.dumps(record.plan),
                "approve": True,
                "incident_id": incident_id,
            }
            facts = replace(facts, resumed=True, crashed_state=state)
            ctx.operator.run_to_end(FAILOVER_DEPLOYMENT, parameters)
            continue
        time.sleep(_EVERY_S)
    return replace(facts, problems=(f"the failover did not end within {ctx.limit_s:.0f} s",))


def nothing_twice(
    store: Store, plan_id: str | None, since: datetime, facts: PrefectKillFacts
) -> PrefectKillFacts:
    """*facts* with each plan client's placement moves since *since* and restore count."""
    record = store.failover(plan_id) if plan_id else None
    if record is None:
        return facts
    steps = store.failover_steps(record.plan_id)
    clients = sorted({s.client_id for s in steps})
    moves = {c: sum(1 for m in store.placement_history(c) if m.at >= since) for c in clients}
    restores = {
        c: sum(s.attempts for s in steps if s.client_id == c and s.step == RESTORE_STEP)
        for c in clients
    }
    return replace(facts, moves=moves, restores=restores)
