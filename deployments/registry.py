"""Every deployment ``ppo-dr serve`` serves, and the global concurrency limits they use.

A runbook issue adds its deployments here: a function that builds the
:class:`~prefect.deployments.runner.RunnerDeployment` (built when serving, not at
import, so importing this module touches no API) appended to :data:`DEPLOYMENTS`,
and each global concurrency limit its flows or tasks take slots of added to
:data:`CONCURRENCY_LIMITS`. ``serve`` creates or updates those limits before it
registers anything: a missing limit would let ``concurrency(name)`` run unthrottled
(PREFECT-NOTES), so our flows pass ``strict=True`` and fail instead.

Entry points are module paths (``flows.report.fleet_report``), not file paths, so
served runs load the installed package whatever directory ``serve`` started in.
"""

from __future__ import annotations

from collections.abc import Callable

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from flows.report import REPORTS_LIMIT, REPORTS_SLOTS, fleet_report

#: Tag on every deployment (and so every run) of ppo-dr, for filtering in the UI.
TAG = "ppo-dr"

#: At most one run of a singleton runbook at a time; a run due while one is still
#: going is cancelled (its evidence says why) instead of queueing up behind it.
ONE_AT_A_TIME = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)


def fleet_report_deployment() -> RunnerDeployment:
    """Daily fleet report at 06:00 UTC, for the fleet file the run's environment names."""
    deployment = fleet_report.to_deployment(
        "fleet-report",
        cron="0 6 * * *",
        tags=[TAG, "report"],
        concurrency_limit=ONE_AT_A_TIME,
        description="Validate the fleet file; publish its summary and app-server table.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)  # the sync form, not a coroutine
    return deployment


#: Builders of every deployment ``ppo-dr serve`` serves, in the order shown.
DEPLOYMENTS: list[Callable[[], RunnerDeployment]] = [
    fleet_report_deployment,
]

#: Global concurrency limits (name -> slots) the runbooks take slots of.
CONCURRENCY_LIMITS: dict[str, int] = {
    REPORTS_LIMIT: REPORTS_SLOTS,
}
