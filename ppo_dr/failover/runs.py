"""Where a failover's runs run and what they are called (pure: no I/O, no Prefect).

A failover run orchestrates; the clients moving onto one target server are a *batch*
(:func:`client_batches`), moved by one run of the flow ``fail-over-clients`` whose
clients are threads of that run. One run per target server, not one per client: on
a worker, each run pays a pick-up and a process start (about 30 s and 13 s per client
run under load, docs/deploy.md), so a run per client made a DC loss grow by ~12 s
per client. Where a batch's run executes is the run's ``client_runs`` parameter:

- ``in-process`` (``ppo-dr serve``, ``make demo``, tests): the orchestrating run calls
  the batch flow itself, a subflow in its own process;
- ``target-pool`` (the distributed topology, ``ppo-dr deploy``): the orchestrator, on
  the ``control`` pool, starts the batch's run on the deployment of the *target*
  DC's pool (:func:`client_deployment`) and waits for it, so the restore reads the
  mirror and writes the new home from inside the DC that will serve the clients, and
  nothing in the lost DC is needed. Its idempotency key (:func:`batch_key`) holds the
  orchestrating run's id, the target server and the batch's clients: the rerun of a
  crashed orchestrator (same run id, same plan) gets the same batch runs back.

The choice is a parameter set by the one deployment declaration
(``deployments/registry.py`` gives the distributed ``failover`` deployment
``client_runs="target-pool"``), not guessed from the runtime: it shows in the UI with
the run's other parameters, and an operator or a test can start either kind by hand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from ppo_dr.errors import PermanentError
from ppo_dr.failover.model import ClientMove
from ppo_dr.failover.plan_json import Plan
from ppo_dr.ids import check_id, is_valid_id
from ppo_dr.inventory import Fleet

ClientRuns = Literal["in-process", "target-pool"]
CLIENT_RUNS: Final[tuple[ClientRuns, ...]] = ("in-process", "target-pool")

#: The flow a batch of clients moves as (its deployments are ``fail-over-clients/into-<dc>``).
CLIENT_FLOW: Final = "fail-over-clients"

#: What the orchestrator does next about a client run it started on a pool.
Verdict = Literal["wait", "finished", "not-started"]

#: Prefect state types of a run no worker has started yet.
_NOT_STARTED: Final = frozenset({"SCHEDULED", "PENDING"})
_FINAL: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})


@dataclass(frozen=True)
class ClientBatch:
    """The moves of a plan onto one target server, in the plan's order, and its DC."""

    to_server: str
    target_dc: str
    moves: tuple[ClientMove, ...]

    @property
    def client_ids(self) -> list[str]:
        """The batch's clients, sorted (what its idempotency key is made of)."""
        return sorted(m.client_id for m in self.moves)


def client_batches(plan: Plan, fleet: Fleet) -> list[ClientBatch]:
    """One batch per target server of *plan*, in the order of its first move (the
    planner orders the moves; that order is kept inside each batch)."""
    grouped: dict[str, list[ClientMove]] = {}
    dcs: dict[str, str] = {}
    for move, dc in zip(plan.moves, target_dcs(plan, fleet), strict=True):
        grouped.setdefault(move.to_server, []).append(move)
        dcs[move.to_server] = dc
    return [ClientBatch(server, dcs[server], tuple(moves)) for server, moves in grouped.items()]


def batch_key(plan_id: str, failover_run_id: str | None, batch: ClientBatch) -> str:
    """The idempotency key of *batch*'s run: the same plan, orchestrating run, target and
    clients give the same key (a rerun after a crash gets the same run back); any other
    set of clients, another key. The clients go in as a digest: a batch may hold many."""
    clients = hashlib.sha256(",".join(batch.client_ids).encode()).hexdigest()[:16]
    return f"{plan_id}-{batch.to_server}-{clients}-{failover_run_id}"


def batch_run_name(plan_id: str, to_server: str, clients: int) -> str:
    """``fail-over-<n>-into-<server>-<plan>``: what the batch's run moves, and where."""
    server = to_server if is_valid_id(to_server) else "invalid"
    return f"fail-over-{clients}-into-{server}-{plan_id[:8]}"


def client_deployment_name(dc: str) -> str:
    """The name of the batch flow's deployment on DC *dc*'s pool: ``into-<dc>``."""
    return f"into-{check_id(dc, 'data centre id')}"


def client_deployment(client_runs: str, target_dc: str) -> str | None:
    """The deployment (``flow/name``) a batch's move into *target_dc* runs on, or None
    when the orchestrator runs it in its own process."""
    if client_runs not in CLIENT_RUNS:
        raise PermanentError(
            f"client_runs {client_runs!r} unknown: use one of {', '.join(CLIENT_RUNS)}"
        )
    if client_runs == "in-process":
        return None
    return f"{CLIENT_FLOW}/{client_deployment_name(target_dc)}"


def target_dcs(plan: Plan, fleet: Fleet) -> list[str]:
    """The data centre of each move's target, in the plan's order: a server the plan
    provisions is in its request's DC (it is not in *fleet* yet), any other in its own."""
    provisioned = {request.server_id: request.dc for request in plan.provisions}
    known = {server.id: server.dc for server in fleet.servers}
    dcs: list[str] = []
    for move in plan.moves:
        dc = provisioned.get(move.to_server) or known.get(move.to_server)
        if dc is None:
            raise PermanentError(
                f"plan {plan.plan_id}: {move.client_id}'s target {move.to_server} is neither "
                "in the fleet nor provisioned by the plan"
            )
        dcs.append(dc)
    return dcs


def client_run_verdict(state_type: str, waited_s: float, start_within_s: float) -> Verdict:
    """Whether a batch's run on a pool is done, still to wait for, or given up on: a run
    no worker of the target DC took within *start_within_s* is not waited for forever
    (the caller cancels it and its clients fail, naming the pool)."""
    kind = state_type.upper()
    if kind in _FINAL:
        return "finished"
    if kind in _NOT_STARTED and waited_s >= start_within_s:
        return "not-started"
    return "wait"


def failover_run_name(
    parameters: Mapping[str, object], run_id: str | None, *, planned: bool
) -> str:
    """One name for a failover run, known before it plans, quoted by the pages as is.

    An incident's failover is ``failover-incident-<id>`` (``migrate-...`` when planned;
    the escalation starts one per incident, so the SMS can name it before it exists);
    any other run is named after its scope plus its short run id, so two runs never
    share a name. ``ppo-dr failover run`` prints the same name from the same inputs.
    """
    mode = "migrate" if planned or parameters.get("mode") == "planned" else "failover"
    incident = parameters.get("incident_id")
    if isinstance(incident, int) and not isinstance(incident, bool) and incident > 0:
        return f"{mode}-incident-{incident}"
    short = str(run_id or "")[:8] or "local"
    for key in ("server", "dc"):
        value = parameters.get(key)
        if value:
            return f"{mode}-{key}-{value if is_valid_id(value) else 'invalid'}-{short}"
    clients = parameters.get("clients") or []
    if isinstance(clients, list | tuple) and clients:
        first = clients[0] if is_valid_id(clients[0]) else "invalid"
        more = f"-and-{len(clients) - 1}" if len(clients) > 1 else ""
        return f"{mode}-clients-{first}{more}-{short}"
    return f"{mode}-plan-{short}"


__all__ = [
    "CLIENT_FLOW",
    "CLIENT_RUNS",
    "ClientBatch",
    "ClientRuns",
    "Verdict",
    "batch_key",
    "batch_run_name",
    "client_batches",
    "client_deployment",
    "client_deployment_name",
    "client_run_verdict",
    "failover_run_name",
    "target_dcs",
]
