"""One client's failover, a flow of its own: ``fail-over-client``.

**fail_over_client(fleet_file, plan_id, move, mode, expected_version, declared_at,
failover_run_id)** — the steps of one client of an approved plan, each a task run
named after the step and the client (:mod:`tasks.failover_client`):
[planned: freeze, final sync] → restore → verify → [planned: lift the freeze on the
target] → app health on the target → switch (placement compare-and-set) → route →
health through the front door. A step that fails rolls the client back (routing back,
restored data removed, source unfrozen) and the run ends Failed; either way the
client's result is in the ledger (``record-client-result``), where the orchestrator
and the incident report read it.

The orchestrating ``failover`` flow runs one per client through :func:`run_client`
(task ``client-<client>``, mapped): in its own process (``client_runs="in-process"``,
``ppo-dr serve``), or as a run of the deployment ``fail-over-client/into-<dc>`` on the
*target* DC's pool, waited for (``"target-pool"``, the distributed topology; see
:mod:`ppo_dr.failover.runs` for why a parameter decides).

Restores onto one target are limited to :data:`TARGET_SLOTS` client runs at a time by
the orchestrator (:func:`target_slot`, a semaphore of its process: the clients of a
failover are threads of its run, and one failover acts at a time), not a Prefect
global concurrency limit, whose slots a killed run would hold until their leases run
out, stalling the rerun that must finish the crashed plan.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed, State

from ppo_dr.errors import PermanentError
from ppo_dr.failover import steps
from ppo_dr.failover.plan import ClientMove
from ppo_dr.failover.runs import client_deployment
from ppo_dr.ids import is_valid_id
from ppo_dr.mirror.runbook import store_url
from tasks.failover import ClientOutcome
from tasks.failover_client import (
    ClientLedger,
    client_run_on_pool,
    final_sync,
    freeze_client,
    health_direct,
    health_front_door,
    record_client_result,
    restore_client,
    roll_back_client,
    route_client,
    switch_placement,
    unfreeze_target,
    verify_client,
)
from tasks.inventory import load_fleet_task

#: Client runs restoring onto one target server at once.
TARGET_SLOTS: Final = 2
#: Longest a client waits for a slot of its target before it fails.
TARGET_SLOT_WAIT_S: Final = 3600.0

_target_slots: dict[str, threading.BoundedSemaphore] = {}
_target_slots_guard = threading.Lock()


def target_slot(server_id: str) -> threading.BoundedSemaphore:
    """The slots of client runs onto *server_id* in this process (:data:`TARGET_SLOTS`)."""
    with _target_slots_guard:
        return _target_slots.setdefault(server_id, threading.BoundedSemaphore(TARGET_SLOTS))


def _client_run_name() -> str:
    """``fail-over-<client>-<plan>``; a deployment's run has its move as JSON."""
    move = flow_run.parameters.get("move")
    client = move.get("client_id") if isinstance(move, dict) else getattr(move, "client_id", None)
    plan = str(flow_run.parameters.get("plan_id") or "")[:8]
    return f"fail-over-{client if is_valid_id(client) else 'client'}-{plan}"


def _steps(ledger: ClientLedger, move: ClientMove, planned: bool, expected_version: int,
           declared_at: datetime, out: ClientOutcome) -> None:  # fmt: skip
    """Every step of the client, in order, filling *out*; raises on the first failure."""
    client, source, target = move.client_id, move.from_server, move.to_server

    def done(data: dict[str, Any], step: str) -> dict[str, Any]:
        if data.pop("_skipped", False):
            out.skipped_steps.append(step)
        return data

    snapshot_id, mirrors = move.snapshot_id, None
    if planned:
        done(freeze_client(ledger, source), "freeze")
        synced = done(final_sync(ledger, move), "final-sync")
        snapshot_id, mirrors = synced["snapshot_id"], synced["mirrors"]
    if not snapshot_id:
        raise PermanentError(f"the plan names no snapshot to restore {client} from")
    restored = done(restore_client(ledger, move, snapshot_id, mirrors), "restore")
    out.snapshot_id = snapshot_id
    out.source_mirror = restored.get("source_mirror")
    out.restored_bytes = restored.get("bytes")
    out.restore_seconds = restored.get("seconds")
    out.restored_files = restored.get("files")
    done(verify_client(ledger, move, snapshot_id, mirrors), "verify")
    if planned:  # the final sync captured the freeze marker; lift it there
        done(unfreeze_target(ledger, target), "unfreeze-target")
    done(health_direct(ledger, target), "health-direct")
    placed = done(switch_placement(ledger, move, expected_version), "switch")
    get_run_logger().info("%s now placed on %s (version %s)", client, target, placed["version"])
    done(route_client(ledger, target), "route")
    healthy = done(health_front_door(ledger, target), "health-front-door")
    healthy_at = datetime.fromisoformat(healthy["healthy_at"])
    out.rto_seconds = max(0.0, (healthy_at - declared_at).total_seconds())
    out.rpo_seconds = steps.rpo_seconds(snapshot_id, declared_at)


@flow(name="fail-over-client", flow_run_name=_client_run_name, timeout_seconds=6 * 3600)
def fail_over_client(
    fleet_file: Path,
    plan_id: str,
    move: ClientMove,
    mode: Literal["emergency", "planned"],
    expected_version: int,
    declared_at: datetime,
    failover_run_id: str | None = None,
) -> ClientOutcome | State[Any]:
    """Move one client of an approved plan: restore, verify, switch, route, check.

    Args:
        fleet_file: the fleet file (read by each step: provisioning added servers).
            The run finds the state store from it (or ``$PPO_DR_DB_URL``) as every
            runbook does: a store URL may carry a password, and a flow run's
            parameters are kept in Prefect's database and shown in its UI.
        plan_id: the plan whose ledger the steps go through.
        move: the client's planned move (from, to, snapshot, mirrors).
        mode: emergency or planned (freeze and final sync first).
        expected_version: the placement version the switch compares and sets.
        declared_at: the failover's declaration (RTO and RPO are counted from it).
        failover_run_id: the orchestrating failover run, recorded with every step.
    """
    url = store_url(load_fleet_task(Path(fleet_file)))
    ledger = ClientLedger(Path(fleet_file), url, plan_id, move.client_id, failover_run_id)
    out = ClientOutcome(move.client_id, move.from_server, move.to_server, "failed")
    try:
        _steps(ledger, move, mode == "planned", expected_version, declared_at, out)
        out.outcome = "ok"
    except Exception as exc:
        out.detail = f"{type(exc).__name__}: {exc}"
        get_run_logger().error(
            "failover of %s failed, rolling back: %s", move.client_id, out.detail
        )
        undone = roll_back_client(ledger, move, mode == "planned", out.detail, return_state=True)
        out.rolled_back = (
            undone.result() if undone.is_completed() else [f"rollback failed: {undone.message}"]
        )
    record_client_result(ledger, out)
    if out.outcome != "ok":
        return Failed(message=f"{move.client_id} not moved to {move.to_server}: {out.detail}",
                      data=out)  # fmt: skip
    return out


@task(name="fail-over-client-run", task_run_name="client-{move.client_id}", cache_policy=NO_CACHE)
def run_client(
    fleet_file: Path,
    url: str,
    plan_id: str,
    move: ClientMove,
    target_dc: str,
    mode: Literal["emergency", "planned"],
    expected_version: int,
    declared_at: datetime,
    failover_run_id: str | None,
    client_runs: str,
) -> ClientOutcome:
    """One client's ``fail-over-client`` run, here or on the target DC's pool, within
    the target's slots; its outcome (a failed client is an outcome, not an error)."""
    deployment = client_deployment(client_runs, target_dc)
    slot = target_slot(move.to_server)
    if not slot.acquire(timeout=TARGET_SLOT_WAIT_S):
        return ClientOutcome.not_moved(
            move, f"no slot on {move.to_server} within {TARGET_SLOT_WAIT_S} s"
        )
    try:
        if deployment is not None:
            ledger = ClientLedger(Path(fleet_file), url, plan_id, move.client_id, failover_run_id)
            parameters = {
                "fleet_file": str(fleet_file),
                "plan_id": plan_id,
                "move": move,
                "mode": mode,
                "expected_version": expected_version,
                "declared_at": declared_at,
                "failover_run_id": failover_run_id,
            }
            key = f"{plan_id}-{move.client_id}-{failover_run_id}"
            return client_run_on_pool(deployment, parameters, key, move, ledger)
        state = fail_over_client(fleet_file, plan_id, move, mode, expected_version,
                                 declared_at, failover_run_id, return_state=True)  # fmt: skip
        outcome = state.result(raise_on_failure=False)  # a Failed run carries its outcome
        if isinstance(outcome, ClientOutcome):
            return outcome
        return ClientOutcome.not_moved(move, f"run {state.name}: {state.message}")
    finally:
        slot.release()


__all__ = ["TARGET_SLOTS", "fail_over_client", "run_client", "target_slot"]
