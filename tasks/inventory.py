"""Tasks over the fleet inventory (:mod:`ppo_dr.inventory`)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ppo_dr.inventory import Fleet, load_fleet, summary
from tasks import RETRY_DELAYS, RETRY_JITTER, retry_condition_fn

#: One row of the fleet report's table: an app server and where it is mirrored.
ServerRow = dict[str, str | int]


@task(
    name="load-fleet",
    task_run_name="load-fleet-{path.name}",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_jitter_factor=RETRY_JITTER,
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=60,
    # The file changes under the same path; a cached Fleet would be a stale fleet.
    cache_policy=NO_CACHE,
)
def load_fleet_task(path: Path) -> Fleet:
    """Read and validate the fleet file; an invalid file fails at once, unretried."""
    fleet = load_fleet(path)
    get_run_logger().info(
        "fleet %s from %s: %d data centres, %d servers, %d clients",
        fleet.name,
        path,
        len(fleet.data_centres),
        len(fleet.servers),
        len(fleet.clients),
    )
    return fleet


@task(name="summarise-fleet", cache_policy=NO_CACHE)
def summarise_fleet(fleet: Fleet) -> str:
    """The operator's summary of the fleet: DCs, roles, clients, mirror pairs."""
    return summary(fleet)


@task(name="tabulate-app-servers", cache_policy=NO_CACHE)
def tabulate_app_servers(fleet: Fleet) -> list[ServerRow]:
    """One row per app server: DC, clients, capacity, on-site and off-site mirrors."""
    return app_server_rows(fleet)


def app_server_rows(fleet: Fleet) -> list[ServerRow]:
    """The rows of :func:`tabulate_app_servers` (pure, so tests can call it directly)."""
    return [
        {
            "server": app.id,
            "dc": app.dc,
            "country": fleet.country_of(app.id),
            "clients": len(fleet.clients_on(app.id)),
            "capacity": app.capacity.clients,
            "on_site_mirror": fleet.onsite_mirror(app.id).id,
            "off_site_mirrors": ", ".join(m.id for m in fleet.offsite_mirrors(app.id)),
        }
        for app in fleet.servers_by_role("app")
    ]
