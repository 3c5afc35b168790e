"""Exporting one incident's evidence: the store's records and the run history, written
as a bundle, its hash recorded on the incident's timeline (``evidence-bundle``).

The run history comes through *read_runs* (the Prefect API, from the deployments
layer: this package never imports Prefect), so everything here runs on a bare store
in tests too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ppo_dr.errors import PermanentError
from ppo_dr.evidence.bundle import check_target, index_html, write_bundle, zip_bundle
from ppo_dr.evidence.manifest import file_sha256
from ppo_dr.evidence.store_records import known_incident, run_ids, store_sections
from ppo_dr.report_answers import answers_for_incident
from ppo_dr.report_html import report_html
from ppo_dr.reports import report_for_incident

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet
    from ppo_dr.store import Store

Record = dict[str, Any]
#: Timeline kind of the entry that records a bundle's hash.
BUNDLE_ENTRY: Final = "evidence-bundle"


@dataclass(frozen=True)
class RunsRead:
    """The run history as read: records by file stem, and how the wait for lagging
    task-run records ended (seconds waited, flow runs still lagging)."""

    sections: dict[str, list[Record]]
    waited_s: float
    lagging: tuple[str, ...]


#: ``read_runs(tag, flow_run_ids) -> RunsRead``
RunReader = Callable[[str, Iterable[str]], RunsRead]


@dataclass(frozen=True)
class ExportResult:
    """Where the bundle went, its hash, and what the export had to wait for."""

    directory: Path
    bundle_hash: str
    files: int
    zip_path: Path | None
    zip_sha256: str | None
    runs: RunsRead


def export_bundle(
    store: Store,
    incident_id: int,
    directory: Path,
    *,
    read_runs: RunReader,
    wait_bound_s: float,
    now: datetime,
    fleet: Fleet | None = None,
    fleet_path: Path | None = None,
    api_url: str | None = None,
    ui_url: str | None = None,
    make_zip: bool = False,
) -> ExportResult:
    """Write the evidence bundle of *incident_id* into *directory* (new or empty) and
    record its hash on the incident's timeline. Bad input changes nothing."""
    check_target(directory)
    zip_target = directory.with_name(directory.name + ".zip")
    if make_zip and zip_target.exists():
        raise PermanentError(f"{zip_target} exists already")
    known_incident(store, incident_id)
    sections = store_sections(store, incident_id, now=now, fleet=fleet, fleet_path=fleet_path)
    runs = read_runs(f"incident:{incident_id}", run_ids(sections))
    sections.update(runs.sections)
    meta: Record = {
        "incident_id": incident_id,
        "exported_at": now.isoformat(),
        "store": store.url,
        "prefect_api": api_url,
        "task_run_wait": {
            "bound_s": wait_bound_s,
            "waited_s": round(runs.waited_s, 1),
            "lagging": list(runs.lagging),
        },
        "files": {name: len(records) for name, records in sections.items()},
    }
    incident_report = report_for_incident(store, incident_id, fleet)
    answers = answers_for_incident(store, incident_report, ui_url)
    report = report_html(incident_report, answers)
    extra = {
        "report.html": "the incident report, rendered from these records",
        "bundle.jsonl": "this export: when, from where, how long it waited for task runs",
    }
    files = {
        "index.html": index_html(meta, sections, ui_url, extra),
        "report.html": report,
    }
    sections["bundle"] = [meta]
    bundle_hash = write_bundle(directory, sections, files)
    count = len(sections) + len(files)
    zipped = zip_bundle(directory) if make_zip else None
    zip_hash = file_sha256(zipped) if zipped else None
    store.add_timeline(
        incident_id,
        BUNDLE_ENTRY,
        f"evidence bundle written to {directory} (sha256 {bundle_hash})",
        data={
            "bundle_sha256": bundle_hash,
            "directory": str(directory.resolve()),
            "files": count,
            "zip": str(zipped) if zipped else None,
            "zip_sha256": zip_hash,
        },
    )
    return ExportResult(directory, bundle_hash, count, zipped, zip_hash, runs)


def recorded_hashes(store: Store, incident_id: int) -> list[tuple[datetime, str]]:
    """Every bundle hash recorded for the incident: ``(when, sha256)``, oldest first."""
    return [
        (e.at, str(e.data.get("bundle_sha256")))
        for e in store.timeline(incident_id)
        if e.kind == BUNDLE_ENTRY and e.data.get("bundle_sha256")
    ]
