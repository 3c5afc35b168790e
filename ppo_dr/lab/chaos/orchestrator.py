"""The orchestrator killed mid-run (``orchestrator-kill``): the verdict, and finding the
processes of one flow run.

Pure verdict: :func:`judge_orchestrator_kill` applies issue 10's rules to what the
runner saw (:class:`KillObservation`): the killed run really was cut short (it
ended Crashed, not Completed); a rerun completed; every client got a new complete
snapshot after the kill; the repositories pass ``verify --read-data`` (a killed
writer leaves unreferenced packs at worst, never a snapshot naming missing data);
earlier snapshots are intact; nobody paged. :func:`flow_run_pids` reads which local
processes run a given Prefect flow run (the runner puts ``PREFECT__FLOW_RUN_ID`` in
the environment of the process it starts, and its children inherit it). The I/O is
in :mod:`ppo_dr.lab.chaos.orchestrator_run`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from ppo_dr.lab.chaos.catalogue import FaultSpec
from ppo_dr.lab.chaos.verdict import ChaosResult, quiet_result, quiet_rules

#: Prefect states a killed run may end in: the runner saw its process die.
KILLED_STATES = ("CRASHED", "FAILED")


def flow_run_pids(environs: Iterable[tuple[int, bytes]], flow_run_id: str) -> list[int]:
    """The pids whose environment (``/proc/PID/environ``: NUL-separated) names the run."""
    wanted = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    return sorted(pid for pid, env in environs if wanted in env.split(b"\0"))


def lock_pid(doc: bytes) -> int | None:
    """The pid a repository lock (``locks/lock``, JSON) names, or None if unreadable."""
    try:
        pid = json.loads(doc).get("pid")
    except (ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else None


@dataclass(frozen=True, slots=True)
class KillObservation:
    """What the runner saw from the kill to the rerun's end and the checks after it.

    ``without_new_snapshot`` are clients with no complete snapshot taken after the
    kill; ``repository_problems`` are ``verify --read-data`` problems, one sentence
    each (None: not verified).
    """

    fault: str
    what: str  # the deployment whose run was killed
    killed_at: datetime | None = None
    killed_pids: int = 0
    running_s: float | None = None  # how long the run had run when it was killed
    holding: str | None = None  # the repository lock its process held when killed
    killed_state: str | None = None
    rerun_state: str | None = None
    rerun_done_at: datetime | None = None
    reruns: int = 0  # mirror runs started after the kill until every client was done
    clients: tuple[str, ...] = ()
    without_new_snapshot: tuple[str, ...] = ()
    repository_problems: tuple[str, ...] | None = None
    snapshots_intact: bool | None = None
    outage_incidents: int = 0
    pages: tuple[datetime, ...] = ()
    notice_keys: tuple[str, ...] = ()
    lost: int | None = None  # acknowledged writes missing now that were not before
    problems: tuple[str, ...] = ()


def _kill_rules(obs: KillObservation) -> list[str]:
    notes = []
    if obs.killed_at is None or not obs.killed_pids:
        notes.append(f"no process of a running {obs.what} run was killed")
        return notes
    if obs.holding is None:
        notes.append(f"the {obs.what} run was not killed while writing a repository")
    if obs.killed_state == "COMPLETED":
        notes.append(f"the {obs.what} run completed anyway: it was killed too late to test")
    elif obs.killed_state not in KILLED_STATES:
        notes.append(f"the killed {obs.what} run ended {obs.killed_state or 'in no final state'}")
    if obs.rerun_state != "COMPLETED":
        notes.append(f"the rerun of {obs.what} ended {obs.rerun_state or 'not at all'}")
    if obs.without_new_snapshot:
        notes.append(
            f"no complete snapshot after the kill of: {', '.join(obs.without_new_snapshot)}"
        )
    if obs.repository_problems is None:
        notes.append("the repositories were not verified after the rerun")
    else:
        notes += [f"verify --read-data: {p}" for p in obs.repository_problems]
    return notes


def judge_orchestrator_kill(spec: FaultSpec, obs: KillObservation) -> ChaosResult:
    """Apply the orchestrator-kill rules (module docstring) to *obs*; each broken one a note."""
    notes = list(obs.problems) + _kill_rules(obs)
    notes += quiet_rules("a killed orchestrator", obs)
    passed = not notes
    if passed:
        notes.append(
            f"{obs.killed_pids} process(es) of a {obs.what} run SIGKILLed after "
            f"{obs.running_s:.1f} s running, holding the lock of {obs.holding}; it ended "
            f"{obs.killed_state}; {obs.reruns} rerun(s) to snapshot every client again"
        )
    events = []
    if obs.killed_at is not None:
        events.append(("orchestrator killed", 0.0))
        if obs.rerun_done_at is not None:
            took = round((obs.rerun_done_at - obs.killed_at).total_seconds(), 1)
            events.append(("rerun completed", took))
    return quiet_result(
        spec,
        obs,
        target=obs.what,
        notes=notes,
        passed=passed,
        detected_after_s=None,
        incidents_opened=obs.outage_incidents,
        events=events,
    )


#: One ledger row as the verdict needs it: (client, step, state, attempts).
LedgerRow = tuple[str, str, str, int]


def ledger_problems(
    at_kill: Iterable[LedgerRow],
    after: Iterable[LedgerRow],
    versions_before: Mapping[str, int],
    versions_after: Mapping[str, int],
) -> list[str]:
    """The failover half's ledger rules, one sentence per broken one: every client of the
    plan has its one restore step done; a restore done before the kill was not begun
    again by the rerun (no client restored twice); every client's placement version grew
    by exactly one (one switch, none repeated, none lost)."""
    before = {(c, s): (state, n) for c, s, state, n in at_kill}
    now = {(c, s): (state, n) for c, s, state, n in after}
    notes = []
    for client in sorted(versions_before):
        state, attempts = now.get((client, "restore"), ("missing", 0))
        if state != "done":
            notes.append(f"{client}: restore step {state} after the rerun, not done")
        done_then, attempts_then = before.get((client, "restore"), ("", 0))
        if done_then == "done" and attempts != attempts_then:
            notes.append(f"{client}: restored again by the rerun (attempts {attempts})")
        grew = versions_after.get(client, 0) - versions_before[client]
        if grew != 1:
            notes.append(f"{client}: placement version moved by {grew}, not 1")
    return notes


def both_halves(mirror: ChaosResult, failover: ChaosResult) -> ChaosResult:
    """The one ``orchestrator-kill`` row: the failover half's figures (its outage, pages,
    RTO, writes lost), passed only if both halves held, each half's notes named."""
    return replace(
        failover,
        passed=mirror.passed and failover.passed,
        duplicate_notices=mirror.duplicate_notices + failover.duplicate_notices,
        snapshots_intact=bool(mirror.snapshots_intact and failover.snapshots_intact),
        notes=[f"mirror half: {n}" for n in mirror.notes]
        + [f"failover half: {n}" for n in failover.notes],
    )
