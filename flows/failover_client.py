"""A batch of clients' failover onto one target server, a flow of its own: ``fail-over-clients``.

**fail_over_clients(fleet_file, plan_id, to_server, moves, mode, expected_versions,
declared_at, failover_run_id)** — per client of the batch, a task run
``client-<client>`` whose steps are task runs named after the step and the client
(:mod:`tasks.failover_client`): [planned: freeze, final sync] → restore → verify →
[planned: lift the freeze on the target] → app health on the target → switch
(placement compare-and-set) → route → health through the front door. A step that fails
rolls that client back (routing back, restored data removed, source unfrozen); the
others go on. Either way each client's result is in the ledger
(``record-client-result``), where the orchestrator and the incident report read it; a
run in which any client did not move ends Failed, the per-client results in its
artifact ``failover-batch-<plan>-<server>``.

The clients of a batch are threads of its run, at most :data:`TARGET_SLOTS` at once
(the run's task runner: the target's restore slots). One batch per target server, so
a worker pays a pick-up and a process start per target, not per client
(:mod:`ppo_dr.failover.runs`). The bound is the run's own and not a Prefect global
concurrency limit, whose slots a killed run would hold until their leases run out,
stalling the rerun that must finish the crashed plan; one failover acts at a time,
and a plan has one batch per target server.

The orchestrating ``failover`` flow runs one per target server through
:func:`run_batch` (task ``clients-into-<server>``, mapped): in its own process
(``client_runs="in-process"``, ``ppo-dr serve``), or as a run of the deployment
``fail-over-clients/into-<dc>`` on the *target* DC's pool, waited for
(``"target-pool"``, the distributed topology; see :mod:`ppo_dr.failover.runs` for why
a parameter decides).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, cast

import httpx
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.failover_artifacts import batch_table
from flows.outcome import failed_with, run_result
from ppo_dr.errors import ApiUnreachable, PermanentError
from ppo_dr.failover import steps
from ppo_dr.failover.plan import ClientMove
from ppo_dr.failover.plan_checks import identities
from ppo_dr.failover.runs import ClientBatch, batch_key, batch_run_name, client_deployment
from ppo_dr.mirror.runbook import store_url
from tasks import API_RETRIES
from tasks.failover import ClientOutcome
from tasks.failover_client import (
    ClientLedger,
    PoolRun,
    batch_run_on_pool,
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

#: Clients restoring onto one target server at once (the threads of its batch run).
TARGET_SLOTS: Final = 2
#: The batch run's task runner; the cast because Prefect's flow decorator types its
#: task_runner invariantly, as a runner of the base future class.
_CLIENT_THREADS = cast(
    "TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner(max_workers=TARGET_SLOTS)
)


def _batch_run_name() -> str:
    """``fail-over-<n>-into-<server>-<plan>`` (:func:`ppo_dr.failover.runs.batch_run_name`)."""
    moves = flow_run.parameters.get("moves")
    return batch_run_name(
        str(flow_run.parameters.get("plan_id") or ""),
        str(flow_run.parameters.get("to_server") or ""),
        len(moves) if isinstance(moves, list) else 0,
    )


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


@task(name="fail-over-client", task_run_name="client-{move.client_id}", cache_policy=NO_CACHE)
def move_client(
    ledger: ClientLedger,
    move: ClientMove,
    mode: Literal["emergency", "planned"],
    expected_version: int,
    declared_at: datetime,
) -> ClientOutcome:
    """One client of the batch: its steps, rolled back on the first failure; its result
    recorded in the ledger either way (a failed client is an outcome, not an error)."""
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
    return out


@flow(
    name="fail-over-clients",
    flow_run_name=_batch_run_name,
    timeout_seconds=6 * 3600,
    task_runner=_CLIENT_THREADS,
)
def fail_over_clients(
    fleet_file: Path,
    plan_id: str,
    to_server: str,
    moves: list[ClientMove],
    mode: Literal["emergency", "planned"],
    expected_versions: dict[str, int],
    declared_at: datetime,
    failover_run_id: str | None = None,
) -> list[ClientOutcome] | State[Any]:
    """Move a batch of clients of an approved plan onto *to_server*: per client restore,
    verify, switch, route, check; at most :data:`TARGET_SLOTS` clients at once.

    Args:
        fleet_file: the fleet file (read by each step: provisioning added servers).
            The run finds the state store from it (or ``$PPO_DR_DB_URL``) as every
            runbook does: a store URL may carry a password, and a flow run's
            parameters are kept in Prefect's database and shown in its UI.
        plan_id: the plan whose ledger the steps go through.
        to_server: the target server every move of the batch goes to.
        moves: the clients' planned moves (from, to, snapshot, mirrors).
        mode: emergency or planned (freeze and final sync first).
        expected_versions: per client, the placement version the switch compares and sets.
        declared_at: the failover's declaration (RTO and RPO are counted from it).
        failover_run_id: the orchestrating failover run, recorded with every step.
    """
    strays = sorted(m.client_id for m in moves if m.to_server != to_server)
    unversioned = sorted(m.client_id for m in moves if m.client_id not in expected_versions)
    wrong = [f"moves to other servers: {', '.join(strays)}"] if strays else []
    wrong += [f"no placement version for {', '.join(unversioned)}"] if unversioned else []
    wrong += ["no moves"] if not moves else []
    if wrong:
        raise PermanentError(f"batch onto {to_server} of plan {plan_id}: {'; '.join(wrong)}")
    fleet = load_fleet_task(Path(fleet_file))
    url = store_url(fleet)
    planned = mode == "planned"
    ledgers = [
        ClientLedger(
            Path(fleet_file), url, plan_id, m.client_id, failover_run_id,
            identities(fleet, m.servers(planned=planned)),
        )
        for m in moves
    ]  # fmt: skip
    futures = move_client.map(
        ledgers,
        moves,
        unmapped(mode),
        [expected_versions[m.client_id] for m in moves],
        unmapped(declared_at),
    )
    outcomes: list[ClientOutcome] = []
    for move, future in zip(moves, futures, strict=True):
        future.wait()
        if future.state.is_completed():
            outcomes.append(future.result())
        else:  # its result could not be recorded either: say so here
            outcomes.append(ClientOutcome.not_moved(move, str(future.state.message)))
    create_table_artifact(
        key=f"failover-batch-{plan_id}-{to_server}",
        table=batch_table(outcomes),
        description=f"failover {plan_id}: the clients moved onto {to_server}, per client",
    )
    failed = [o for o in outcomes if o.outcome != "ok"]
    if failed:
        return failed_with(
            f"{len(failed)} of {len(moves)} client(s) not moved to {to_server}: "
            + "; ".join(f"{o.client_id}: {o.detail}" for o in failed),
            outcomes,
        )
    return outcomes


@contextmanager
def _api_unreachable_raised() -> Iterator[None]:
    """Raise a failure to reach the Prefect API in the block as ApiUnreachable."""
    try:
        yield
    except Exception as exc:
        cause = _transport_error(exc)
        if cause is None:
            raise
        why = f"{type(cause).__name__}: {cause}"
        raise ApiUnreachable(f"the Prefect API did not answer ({why}): trying again") from exc


def _transport_error(exc: BaseException) -> httpx.TransportError | None:
    """The httpx transport error behind *exc*, if any: Prefect raises it as it is from a
    client in use, and as the cause of a RuntimeError from a new client's first call."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.TransportError):
            return seen
        seen = seen.__cause__
    return None


@task(name="fail-over-clients-run", task_run_name="clients-into-{batch.to_server}",
      cache_policy=NO_CACHE, **API_RETRIES)  # fmt: skip
def run_batch(
    fleet_file: Path,
    url: str,
    plan_id: str,
    batch: ClientBatch,
    mode: Literal["emergency", "planned"],
    expected_versions: dict[str, int],
    declared_at: datetime,
    failover_run_id: str | None,
    client_runs: str,
) -> list[ClientOutcome]:
    """The batch's ``fail-over-clients`` run, here or on the target DC's pool; each
    client's outcome, in the batch's order (a failed client is an outcome, not an error).

    Starting that run needs the Prefect API: when it does not answer (a server restart,
    seen in the chaos suite's ``prefect-server-kill``) the batch is tried again
    (``API_RETRIES``); the ledger skips every step an earlier try did.
    """
    with _api_unreachable_raised():
        moves = list(batch.moves)
        versions = {m.client_id: expected_versions[m.client_id] for m in moves}
        deployment = client_deployment(client_runs, batch.target_dc)
        if deployment is not None:
            parameters = {
                "fleet_file": str(fleet_file),
                "plan_id": plan_id,
                "to_server": batch.to_server,
                "moves": moves,
                "mode": mode,
                "expected_versions": versions,
                "declared_at": declared_at,
                "failover_run_id": failover_run_id,
            }
            key = batch_key(plan_id, failover_run_id, batch)
            run = PoolRun(deployment, parameters, key)
            return batch_run_on_pool(run, url, plan_id, failover_run_id, moves)
        state = fail_over_clients(fleet_file, plan_id, batch.to_server, moves, mode, versions,
                                  declared_at, failover_run_id, return_state=True)  # fmt: skip
        outcomes = run_result(state)  # a Failed run carries its outcomes
        if isinstance(outcomes, list):
            return outcomes
        return [ClientOutcome.not_moved(m, f"run {state.name}: {state.message}") for m in moves]


__all__ = ["TARGET_SLOTS", "fail_over_clients", "move_client", "run_batch"]
