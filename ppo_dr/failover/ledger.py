"""Running failover steps through the store's ledger, so a rerun skips what is done.

:func:`run_step` is the one way a step runs: the ledger says whether it finished in an
earlier run (then its recorded data comes back and nothing runs again), otherwise it
runs and its outcome (data, or the error) is recorded. :func:`roll_back_steps` marks a
client's steps rolled back, so a later rerun of the plan does them again.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ppo_dr.errors import PermanentError

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet, Server
    from ppo_dr.store import Store

REACH_TIMEOUT_S: Final = 3.0


@dataclass(frozen=True)
class StepOutcome:
    """What a step returned (or returned in the run that did it), and whether it ran now."""

    data: dict[str, Any]
    skipped: bool


def run_step(
    store: Store,
    plan_id: str,
    client_id: str,
    step: str,
    action: Callable[[], Mapping[str, Any] | None],
    *,
    flow_run_id: str | None = None,
) -> StepOutcome:
    """Run *action* as *step* of *client_id*, unless the ledger says it is done.

    The action's mapping (JSON values) is stored with the step: a rerun that skips the
    step gets it back, so later steps have what they need. Any exception marks the step
    failed (with its message) and propagates.
    """
    begun = store.begin_step(plan_id, client_id, step, flow_run_id=flow_run_id)
    if begun.done:
        return StepOutcome(dict(begun.data), skipped=True)
    try:
        data = dict(action() or {})
    except BaseException as exc:
        store.finish_step(plan_id, client_id, step, "failed", f"{type(exc).__name__}: {exc}")
        raise
    store.finish_step(plan_id, client_id, step, "done", data=data)
    return StepOutcome(data, skipped=False)


def roll_back_steps(store: Store, plan_id: str, client_id: str, detail: str) -> list[str]:
    """Mark every done or running step of *client_id* rolled back; their names."""
    undone: list[str] = []
    for step in store.failover_steps(plan_id, client_id):
        if step.state in ("done", "running"):
            store.finish_step(plan_id, client_id, step.step, "rolled-back", detail)
            undone.append(step.step)
    return undone


def placement_versions(store: Store, fleet: Fleet, clients: Iterable[str]) -> dict[str, int]:
    """The placement version of each client now (placing, from fleet.yaml, any client the
    store never placed), for the switch's compare-and-set."""
    wanted = list(clients)
    homes = {c.id: c.server for c in fleet.clients if c.id in wanted}
    store.seed_placements(homes, reason="seeded by failover")
    versions: dict[str, int] = {}
    for client in wanted:
        placement = store.placement(client)
        if placement is None:
            raise PermanentError(f"client {client} is not in fleet {fleet.name}")
        versions[client] = placement.version
    return versions


def ssh_reachable(host: str, port: int, timeout: float = REACH_TIMEOUT_S) -> str | None:
    """None if *host*:*port* answers with an SSH banner within *timeout*, else why not.

    A banner, not just a TCP connect: a hung server (or a black-holed network) accepts
    and never speaks, and a dead one behind a forwarder accepts and closes at once.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            banner = sock.recv(64)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    if not banner.startswith(b"SSH-"):
        return "no SSH banner" if not banner else f"not SSH: {banner[:20]!r}"
    return None


def unreachable_servers(
    fleet: Fleet, timeout: float = REACH_TIMEOUT_S, probe: Callable[..., str | None] = ssh_reachable
) -> dict[str, str]:
    """Servers of *fleet* that do not answer SSH now (id -> why), checked in parallel.

    Object-storage mirrors (no SSH endpoint) are not probed here: a restore that cannot
    read one falls back to the next mirror of the plan.
    """
    servers = [s for s in fleet.servers if s.ssh is not None]
    if not servers:
        return {}

    def check(server: Server) -> str | None:
        assert server.ssh is not None
        return probe(server.ssh.host, server.ssh.port, timeout)

    with ThreadPoolExecutor(max_workers=min(16, len(servers))) as pool:
        answers = list(pool.map(check, servers))
    return {s.id: why for s, why in zip(servers, answers, strict=True) if why is not None}


__all__ = [
    "StepOutcome",
    "placement_versions",
    "roll_back_steps",
    "run_step",
    "ssh_reachable",
    "unreachable_servers",
]
