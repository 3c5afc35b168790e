"""Where a failover's runs run and what they are called (pure: no I/O, no Prefect).

A failover run orchestrates; each client's move is a run of its own, the flow
``fail-over-client``. Where that run executes is the run's ``client_runs`` parameter:

- ``in-process`` (``ppo-dr serve``, ``make demo``, tests): the orchestrating run calls
  the client flow itself, a subflow in its own process;
- ``target-pool`` (the distributed topology, ``ppo-dr deploy``): the orchestrator, on
  the ``control`` pool, starts the client's run on the deployment of the *target*
  DC's pool (:func:`client_deployment`) and waits for it, so the restore reads the
  mirror and writes the new home from inside the DC that will serve the client, and
  nothing in the lost DC is needed.

The choice is a parameter set by the one deployment declaration
(``deployments/registry.py`` gives the distributed ``failover`` deployment
``client_runs="target-pool"``), not guessed from the runtime: it shows in the UI with
the run's other parameters, and an operator or a test can start either kind by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from ppo_dr.errors import PermanentError
from ppo_dr.failover.plan_json import Plan
from ppo_dr.ids import check_id, is_valid_id
from ppo_dr.inventory import Fleet

ClientRuns = Literal["in-process", "target-pool"]
CLIENT_RUNS: Final[tuple[ClientRuns, ...]] = ("in-process", "target-pool")

#: The flow each client's move runs as (its deployments are ``fail-over-client/into-<dc>``).
CLIENT_FLOW: Final = "fail-over-client"

#: What the orchestrator does next about a client run it started on a pool.
Verdict = Literal["wait", "finished", "not-started"]

#: Prefect state types of a run no worker has started yet.
_NOT_STARTED: Final = frozenset({"SCHEDULED", "PENDING"})
_FINAL: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})


def client_deployment_name(dc: str) -> str:
    """The name of the client flow's deployment on DC *dc*'s pool: ``into-<dc>``."""
    return f"into-{check_id(dc, 'data centre id')}"


def client_deployment(client_runs: str, target_dc: str) -> str | None:
    """The deployment (``flow/name``) a client's move into *target_dc* runs on, or None
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
    """Whether a client run on a pool is done, still to wait for, or given up on: a run
    no worker of the target DC took within *start_within_s* is not waited for forever
    (the caller cancels it and the client fails, naming the pool)."""
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
    "ClientRuns",
    "Verdict",
    "client_deployment",
    "client_deployment_name",
    "client_run_verdict",
    "failover_run_name",
    "target_dcs",
]
