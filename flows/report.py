"""Reports: the fleet report with its SLA view; incident reports come from the CLI.

**Fleet report** — what an operator reads to know what the runbooks will act on:
load and validate the fleet file, publish its summary as a markdown artifact and
one table row per app server (DC, clients, capacity, on-site mirror, off-site
mirrors); then the fleet and SLA report of the last *sla_days* days (availability
against each client's target, MTTD/MTTA/MTTR, RPO against the one-hour promise,
mirror traffic, verify results, drill trend, failed notices; charts embedded) as a
markdown artifact, and as an HTML file under ``<home>/reports/`` when *html_dir* is
not given (a store that cannot be read makes that artifact say so; the fleet part
still completes). The run is named ``fleet-report-<fleet>-<UTC time>`` and tagged
``fleet:<fleet>`` as soon as the file has been read; a run whose file could not be
read keeps the name ``fleet-report-<UTC time>`` and fails with every violation in
its log, without retries (a broken file does not fix itself).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from ppo_dr import config
from ppo_dr.inventory import Fleet
from ppo_dr.mirror.runbook import store_url
from tasks import label_flow_run
from tasks.inventory import load_fleet_task, summarise_fleet, tabulate_app_servers
from tasks.report import render_fleet_sla
from tasks.slots import leased_slot

#: The period the scheduled report covers, ending when the run starts.
SLA_DAYS = 30

#: Global concurrency limit every report runbook holds a slot of while it works.
#: Reports read the run history in bulk; on a small server a burst of them would
#: slow the API the probe and escalation depend on. ``ppo-dr serve`` creates it.
REPORTS_LIMIT = "reports"
REPORTS_SLOTS = 2


def run_stamp() -> str:
    """This run's scheduled start in UTC, as used in run names: ``2026-11-30T060000Z``."""
    return flow_run.scheduled_start_time.astimezone(UTC).strftime("%Y-%m-%dT%H%M%SZ")


def publish_fleet_sla(fleet: Fleet, days: int, html_dir: Path) -> None:
    """The fleet/SLA report of the last *days* days as an artifact and an HTML file; a
    store that cannot be read is said in the artifact (the fleet part stands)."""
    end = datetime.now(UTC).replace(microsecond=0)
    target = html_dir / f"fleet-sla-{run_stamp()}.html"
    state = render_fleet_sla(
        store_url(fleet), fleet, end - timedelta(days=days), end, target, return_state=True
    )
    markdown = (
        f"# Fleet report {fleet.name}: SLA part unavailable\n\n"
        f"The store could not be read: `{state.message}`. The fleet file is valid; see "
        "this run's logs."
        if state.is_failed()
        else state.result()
    )
    create_markdown_artifact(
        key=f"fleet-sla-{fleet.name}",
        markdown=markdown,
        description=f"Fleet and SLA report of {fleet.name}, last {days} days (HTML: {target})",
    )


def _first_run_name() -> str:
    return f"fleet-report-{run_stamp()}"


@flow(name="fleet-report", flow_run_name=_first_run_name, timeout_seconds=600)
def fleet_report(
    fleet_file: Path | None = None, sla_days: int = SLA_DAYS, html_dir: Path | None = None
) -> str:
    """Fleet report: validate the fleet file, publish its summary and app-server table,
    then the fleet/SLA report of the last *sla_days* days.

    Args:
        fleet_file: the fleet file; default ``$PPO_DR_FLEET`` or the lab's, chosen when
            the run starts (so a deployment follows the environment it runs in).
        sla_days: how many days (ending now) the SLA report covers; 0 skips it.
        html_dir: where the SLA report's HTML file goes (default ``<home>/reports``).
    """
    path = fleet_file or config.fleet_file()
    fleet = load_fleet_task(path)
    label_flow_run(f"fleet-report-{fleet.name}-{run_stamp()}", tags=[f"fleet:{fleet.name}"])

    with leased_slot(REPORTS_LIMIT, timeout_s=300, store_url=store_url(fleet)):
        text = summarise_fleet(fleet)
        rows = tabulate_app_servers(fleet)
        create_markdown_artifact(
            key=f"fleet-report-{fleet.name}",
            markdown=(
                f"# Fleet report: {fleet.name}\n\n"
                f"Fleet file `{path}`, run `{flow_run.name}`.\n\n"
                f"```text\n{text}\n```\n"
            ),
            description=f"Summary of fleet {fleet.name}",
        )
        create_table_artifact(
            key=f"fleet-app-servers-{fleet.name}",
            table=rows,
            description=f"App servers of fleet {fleet.name} and their mirrors",
        )
        if sla_days > 0:
            publish_fleet_sla(fleet, sla_days, html_dir or config.home() / "reports")
    return text
