"""``ppo-dr deploy``: register the distributed topology against a Prefect server.

From the one declaration (:func:`deployments.registry.distributed_deployments`), in
this order, idempotently (a second run changes nothing and says ``unchanged``):

1. checks the server first: it must answer ``/api/health`` and report a Prefect
   version of the same minor series as ours, else :class:`DeployError` names the URL
   and both versions and nothing is written;
2. the work pools (``control`` and ``dc-<id>`` per data centre, type ``process``),
   then the ``mirror`` work queue of each DC pool with its concurrency limit (before
   the deployments that name it: applying one would create it without a limit);
3. the global concurrency limits (before any deployment: a missing limit would run
   unthrottled);
4. every deployment on its pool (schedules, parameters, deployment concurrency);
   registered by module path, no image, no push: workers import this checkout;
   :data:`APPLY_AT_ONCE` at a time (each is a few round trips the API spends mostly
   waiting on PostgreSQL; one after another, the 61 of ``--scale 50x20`` took 4-7
   minutes), reported in the declaration's order;
5. the probe heartbeat automation, enabled (the control workers serve the watchdog);
   the zombie-run and failover-rerun automations (:mod:`deployments.automations`);
6. a ``probe-fleet`` run now, unless one is running or due
   (:func:`deployments.probe_start.start_probe_now`):
   the probe's interval schedule is anchored when it is registered, so its first run
   comes a whole period (10 minutes) after a fresh deploy, and until then nothing
   watches the fleet (seen in the 50x20 lab: no heartbeat for the first 9 minutes).
"""

from __future__ import annotations

import contextvars
import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deployments.console import Echo
from deployments.probe_start import start_probe_now
from flows.mirror_schedule import ensure_work_queues
from ppo_dr.errors import PermanentError
from ppo_dr.inventory import load_fleet

if TYPE_CHECKING:
    from deployments.registry import Routed

CHECK_TIMEOUT = 10.0
#: Deployments registered at once by :func:`apply_deployments`.
APPLY_AT_ONCE = 8


class DeployError(PermanentError):
    """The server cannot take the deployment: unreachable, not Prefect, another version."""


@dataclass(frozen=True)
class ServerCheck:
    """What the server said about itself."""

    api_url: str
    version: str


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=CHECK_TIMEOUT) as response:  # noqa: S310
        return json.loads(response.read())


def check_server(api_url: str) -> ServerCheck:
    """Refuse a server we must not deploy to, before anything is written to it."""
    import prefect

    api_url = api_url.rstrip("/")
    try:
        healthy = _get_json(f"{api_url}/health")
        version = _get_json(f"{api_url}/admin/version")
    except urllib.error.HTTPError as exc:
        raise DeployError(
            f"{api_url} is not a Prefect API (HTTP {exc.code} on {exc.url}); "
            "the URL should end in /api"
        ) from None
    except (OSError, ValueError) as exc:
        raise DeployError(f"Prefect API at {api_url} unreachable: {exc}") from None
    if healthy is not True or not isinstance(version, str):
        raise DeployError(f"{api_url} does not answer like a Prefect API (health {healthy!r})")
    ours = prefect.__version__
    if version.split(".")[:2] != ours.split(".")[:2]:
        raise DeployError(
            f"Prefect server at {api_url} runs {version}, this ppo-dr uses {ours}: "
            "upgrade one side so both are the same minor version (docs/deploy.md, Upgrades)"
        )
    return ServerCheck(api_url, version)


def ensure_work_pools(pools: list[str]) -> list[tuple[str, str]]:
    """Create each missing process pool; an existing one of another type is refused."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    done: list[tuple[str, str]] = []
    with get_client(sync_client=True) as client:
        for name in pools:
            try:
                existing = client.read_work_pool(name)
            except ObjectNotFound:
                try:
                    client.create_work_pool(WorkPoolCreate(name=name, type="process"))
                    done.append((name, "created"))
                    continue
                except ObjectAlreadyExists:
                    existing = client.read_work_pool(name)
            if existing.type != "process":
                raise DeployError(
                    f"work pool {name!r} exists with type {existing.type!r}, "
                    "not 'process'; remove it or rename ours"
                )
            done.append((name, "unchanged"))
    return done


def apply_deployments(
    routed: Sequence[Routed], *, echo: Echo = print, at_once: int = APPLY_AT_ONCE
) -> None:
    """Apply each deployment on its pool, *at_once* in flight, echoed in *routed*'s order.

    Each apply is an upsert by flow and deployment name, so the order does not matter
    and a second deploy changes nothing. Each thread runs in a copy of the caller's
    context: the API URL is a context-local setting, which a bare thread would not
    see (it would talk to an ephemeral server of its own). The first failure cancels
    what has not started and is raised; what was applied stays, as before.
    """
    with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="deploy") as pool:
        futures = [
            pool.submit(
                contextvars.copy_context().run, item.deployment.apply, work_pool_name=item.pool
            )
            for item in routed
        ]
        try:
            for item, future in zip(routed, futures, strict=True):
                future.result()
                name = f"{item.deployment.flow_name}/{item.deployment.name}"
                echo(f"deployment {name} -> {item.pool}")
        finally:
            for future in futures:
                future.cancel()


def deploy(
    api_url: str,
    fleet_file: Path,
    *,
    echo: Echo = print,
    at_once: int = APPLY_AT_ONCE,
) -> int:
    """Register pools, queues, limits, deployments (*at_once* in flight) and the
    automations, and start the probe (:func:`deployments.probe_start.start_probe_now`);
    the deployment count."""
    from deployments.automations import ensure_probe_automation, ensure_run_recovery_automations
    from deployments.prefect_api import use_api
    from deployments.registry import (
        CONCURRENCY_LIMITS,
        distributed_deployments,
        mirror_queues,
        work_pools,
    )
    from deployments.serve import ensure_concurrency_limits

    fleet_file = fleet_file.expanduser().resolve()
    fleet = load_fleet(fleet_file)  # bad fleet: refused before the server is touched
    server = check_server(api_url)
    echo(f"Prefect {server.version} at {server.api_url}")
    previous = os.environ.get("PPO_DR_FLEET")
    os.environ["PPO_DR_FLEET"] = str(fleet_file)  # the builders read timings from it
    try:
        routed = distributed_deployments(fleet)
    finally:
        if previous is None:
            os.environ.pop("PPO_DR_FLEET", None)
        else:
            os.environ["PPO_DR_FLEET"] = previous
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with use_api(None), temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        for name, what in ensure_work_pools(work_pools(fleet)):
            echo(f"work pool {name}: {what}")
        for queue, what in ensure_work_queues(mirror_queues(fleet)):
            echo(f"work queue {queue.pool}/{queue.queue} ({queue.limit}): {what}")
        for name, slots, what in ensure_concurrency_limits(CONCURRENCY_LIMITS):
            echo(f"concurrency limit {name} ({slots}): {what}")
        apply_deployments(routed, echo=echo, at_once=at_once)
        ensure_probe_automation(fleet_file, enabled=True, echo=echo)
        ensure_run_recovery_automations(echo=echo)
        start_probe_now(echo)
    return len(routed)
