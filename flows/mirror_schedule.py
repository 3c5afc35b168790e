"""The scheduled mirror of one server: a deployment on its data centre's pool.

``ppo-dr deploy`` registers one for every server that holds clients or may
(:func:`deployments.registry.distributed_deployments`). A failover registers one for
each new home that has none, where the fleet is deployed that way
(:func:`schedule_mirrors`): a server it provisioned was otherwise mirrored once, by the
failover itself, and then not again until someone ran ``ppo-dr deploy``, while nothing
alerted (a server's stale alerts come from its own mirror runs).

The shape lives here, below ``deployments``, so that the failover runbook can build it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect import Flow, get_run_logger, task
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from flows.mirror import MIRROR_DC_SLOTS, mirror_server
from ppo_dr.inventory import Fleet, load_fleet
from tasks import io_task

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

#: Tag on every deployment (and so every run) of ppo-dr, for filtering in the UI.
TAG = "ppo-dr"

#: At most one run of a singleton runbook at a time; a run due while one is still
#: going is cancelled (its evidence says why) instead of queueing up behind it.
ONE_AT_A_TIME = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)

#: The work queue of every DC pool that holds the mirror runs. Its concurrency limit
#: (:data:`flows.mirror.MIRROR_DC_SLOTS`) is one the worker respects *before* it starts
#: a run's process: a fleet-wide mirror due at once waits in the queue as Scheduled
#: runs, instead of every run starting a process that then waits inside the flow for
#: its DC's slot (at 50x20 that was 50 processes and a load of ~43). The pool's
#: ``default`` queue, where a failover's restores into the DC run, has no limit and
#: the higher priority, so queued mirrors never hold up a restore.
MIRROR_QUEUE = "mirror"


def tagged_deployment(
    flow: Flow[..., Any], name: str, *, tags: list[str], **options: Any
) -> RunnerDeployment:
    """*flow* as deployment *name*, tagged ``ppo-dr`` and *tags*, its entry point a
    module path (served runs load the installed package, wherever serve started)."""
    deployment = flow.to_deployment(
        name, tags=[TAG, *tags], entrypoint_type=EntrypointType.MODULE_PATH, **options
    )
    assert isinstance(deployment, RunnerDeployment)  # the sync form, not a coroutine
    return deployment


def dc_pool(dc_id: str) -> str:
    """The process work pool of data centre *dc_id*: its workers run its mirrors."""
    return f"dc-{dc_id}"


def mirror_deployment_name(server_id: str) -> str:
    """``mirror-<server>``: the deployment (of flow ``mirror-server``) of one server."""
    return f"mirror-{server_id}"


@dataclass(frozen=True)
class QueueLimit:
    """A work queue of a pool and the runs of it that may be Pending or Running at once."""

    pool: str
    queue: str
    limit: int


def mirror_of_server_deployment(fleet: Fleet, server_id: str) -> RunnerDeployment:
    """The scheduled mirror of one server, on its data centre's pool, in the pool's
    :data:`MIRROR_QUEUE` (its name is ``mirror-server/mirror-<server>``); a run due
    while one still runs is cancelled."""
    server = fleet.server(server_id)
    return tagged_deployment(
        mirror_server,
        mirror_deployment_name(server.id),
        cron=fleet.timing.mirror_cron,
        parameters={"server_id": server.id},
        tags=["mirror", f"dc:{server.dc}", f"server:{server.id}"],
        concurrency_limit=ONE_AT_A_TIME,
        work_pool_name=dc_pool(server.dc),
        work_queue_name=MIRROR_QUEUE,
        description=f"Mirror {server.id} from inside {server.dc} to its on-site and off-site "
        "mirrors, verify, record the catalogue.",
    )


def ensure_work_queues(queues: Sequence[QueueLimit]) -> list[tuple[QueueLimit, str]]:
    """Create each missing work queue in its (existing) pool with its concurrency limit,
    or set the limit of one that has another or is paused; each with what was done.
    A new queue takes the pool's next priority, after ``default``."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    done: list[tuple[QueueLimit, str]] = []
    with get_client(sync_client=True) as client:
        for want in queues:
            try:
                existing = client.read_work_queue_by_name(want.queue, work_pool_name=want.pool)
            except ObjectNotFound:
                try:
                    client.create_work_queue(
                        want.queue, concurrency_limit=want.limit, work_pool_name=want.pool
                    )
                    done.append((want, "created"))
                    continue
                except ObjectAlreadyExists:  # created by a concurrent deploy
                    existing = client.read_work_queue_by_name(want.queue, work_pool_name=want.pool)
            if existing.concurrency_limit == want.limit and not existing.is_paused:
                done.append((want, "unchanged"))
                continue
            client.update_work_queue(existing.id, concurrency_limit=want.limit, is_paused=False)
            was = f"{existing.concurrency_limit}{', paused' if existing.is_paused else ''}"
            done.append((want, f"updated, was {was}"))
    return done


def _mirror_deployed(client: SyncPrefectClient, server_id: str) -> bool:
    """Whether *server_id* has its own ``mirror-server`` deployment."""
    from prefect.exceptions import ObjectNotFound

    try:
        client.read_deployment_by_name(f"{mirror_server.name}/{mirror_deployment_name(server_id)}")
    except ObjectNotFound:
        return False
    return True


Scheduled = Literal["created", "present"]


@task(name="schedule-mirrors", **io_task(120))
def schedule_mirrors(
    fleet_file: Path, homes: Iterable[str], deployed_like: Iterable[str]
) -> dict[str, Scheduled]:
    """Give each of *homes* its scheduled mirror deployment if it has none; what was done
    per home, or nothing where the fleet is not deployed per server.

    The fleet counts as deployed per server (``ppo-dr deploy``) when any of
    *deployed_like* (the servers the clients left) has its own mirror deployment; under
    ``ppo-dr serve``, ``mirror-fleet`` already mirrors every server that holds clients.
    An existing deployment is left as it is (its schedule may be paused on purpose);
    ``ppo-dr deploy`` owns its shape."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        if not any(_mirror_deployed(client, s) for s in sorted(set(deployed_like))):
            return {}
        missing = [h for h in sorted(set(homes)) if not _mirror_deployed(client, h)]
    log = get_run_logger()
    fleet = load_fleet(fleet_file)  # as it is now: it lists the servers just provisioned
    done: dict[str, Scheduled] = {h: "present" for h in set(homes) - set(missing)}
    for home in missing:
        deployment = mirror_of_server_deployment(fleet, home)
        pool = dc_pool(fleet.server(home).dc)
        ensure_work_queues([QueueLimit(pool, MIRROR_QUEUE, MIRROR_DC_SLOTS)])
        deployment.apply(work_pool_name=pool)
        log.info(
            "%s had no scheduled mirror: %s/%s created on %s (%s)",
            home, mirror_server.name, deployment.name, pool, fleet.timing.mirror_cron,
        )  # fmt: skip
        done[home] = "created"
    return dict(sorted(done.items()))
