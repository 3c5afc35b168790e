"""Report tasks: the fleet and SLA report read from the store and rendered (thin)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import task

from ppo_dr.fleet_sla import fleet_report_for
from ppo_dr.fleet_sla_html import charts, fleet_report_html, fleet_report_markdown
from ppo_dr.inventory import Fleet
from ppo_dr.store import Store
from tasks import io_task


@task(name="render-fleet-sla", **io_task(300))
def render_fleet_sla(
    store_url: str, fleet: Fleet, start: datetime, end: datetime, html_file: Path
) -> str:
    """Write the fleet/SLA report of ``[start, end)`` to *html_file*; return it as
    Markdown (the artifact), with the same charts."""
    with Store.open(store_url) as store:
        report = fleet_report_for(store, fleet, start, end)
    images = charts(report)
    html_file.parent.mkdir(parents=True, exist_ok=True)
    html_file.write_text(fleet_report_html(report, images), encoding="utf-8")
    return fleet_report_markdown(report, images)
