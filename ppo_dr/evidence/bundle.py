"""Writing an evidence bundle: JSON-lines files, ``index.html``, ``MANIFEST.sha256``.

A bundle is written into a hidden sibling directory and renamed into place when
complete, so a failed export leaves nothing behind and a bundle directory is never
half written. A target that exists and is not empty is refused before anything is
read or written: two bundles never mix.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ppo_dr.errors import PermanentError
from ppo_dr.evidence.manifest import MANIFEST, write_manifest
from ppo_dr.run_links import flow_run_link

Record = dict[str, Any]

#: What each JSON-lines file holds, in the order the index lists them.
SECTIONS: Final = {
    "incident": "the incident as the store holds it (state, scope, times, post-mortem)",
    "timeline": "the incident timeline, each entry with the flow run that caused it",
    "notices": "every notice: channel, recipient, status, attempts, receipt or last error",
    "flow_runs": "the flow runs (Prefect): states with timestamps, parameters, tags, "
    "work pool, queue and process",
    "task_runs": "their task runs, each with every state it went through (retries too)",
    "logs": "the flow runs' logs",
    "artifacts": "the flow runs' artifacts (summaries, tables)",
    "probe_transitions": "probe state changes of the affected targets, first failure to recovery",
    "probe_minutes": "per-minute probe checks and failures of the affected targets",
    "failovers": "the failover ledger: one row per plan run",
    "failover_steps": "every failover step per client, with its flow run",
    "failover_results": "per client: from/to, mirror, snapshot, RPO, RTO, writes lost",
    "snapshots_restored": "the catalogue rows of the snapshots restored, with root_sha256",
    "placement_history": "every placement of the affected clients",
    "maintenance_windows": "maintenance windows that applied during the incident",
    "fleet": "the fleet file in force (its sha256; secrets only as references)",
}


def check_target(directory: Path) -> None:
    """Refuse a bundle target that is a file, or a directory that is not empty."""
    if directory.exists() and not directory.is_dir():
        raise PermanentError(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise PermanentError(
            f"{directory} exists and is not empty: give a new or empty directory "
            "(two bundles are never mixed)"
        )


def jsonl(records: list[Record]) -> str:
    """One JSON object per line, keys sorted (the same records give the same bytes)."""
    return "".join(
        json.dumps(r, sort_keys=True, ensure_ascii=False, default=str) + "\n" for r in records
    )


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def index_html(
    meta: Mapping[str, Any],
    sections: Mapping[str, list[Record]],
    ui_url: str | None,
    extra: Mapping[str, str],
) -> str:
    """The bundle's front page: what the incident was, each file and what it holds,
    the flow runs (linked to the Prefect UI when known) and how the export ended."""
    incident = (sections.get("incident") or [{}])[0]
    title = f"Evidence: incident {meta['incident_id']}: {incident.get('title', '')}"
    rows = [
        f'<tr><td><a href="{_h(name)}.jsonl">{_h(name)}.jsonl</a></td>'
        f"<td>{len(sections[name])}</td><td>{_h(SECTIONS.get(name, ''))}</td></tr>"
        for name in [*SECTIONS, *sorted(set(sections) - set(SECTIONS))]
        if name in sections
    ]
    rows += [
        f'<tr><td><a href="{_h(name)}">{_h(name)}</a></td><td></td><td>{_h(what)}</td></tr>'
        for name, what in extra.items()
    ]
    runs = []
    for run in sections.get("flow_runs", []):
        link = flow_run_link(ui_url, str(run.get("id")))
        name = _h(run.get("name", run.get("id")))
        shown = f'<a href="{_h(link)}">{name}</a>' if link else name
        runs.append(
            f"<tr><td>{shown}</td><td>{_h(run.get('state_name'))}</td>"
            f"<td>{_h(run.get('start_time'))}</td><td>{_h(run.get('end_time'))}</td></tr>"
        )
    wait = meta.get("task_run_wait", {})
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{_h(title)}</title></head><body>",
            f"<h1>{_h(title)}</h1>",
            f"<p>Exported {_h(meta.get('exported_at'))} from store {_h(meta.get('store'))} "
            f"and Prefect API {_h(meta.get('prefect_api'))}. Every file is listed with its "
            f'sha256 in <a href="{MANIFEST}">{MANIFEST}</a>; check with '
            "<code>ppo-dr evidence verify DIR</code> or <code>sha256sum -c "
            f"{MANIFEST}</code>.</p>",
            f"<p>Task-run records: waited {_h(wait.get('waited_s'))} s of at most "
            f"{_h(wait.get('bound_s'))} s; runs that may still miss task runs: "
            f"{_h(', '.join(wait.get('lagging', [])) or 'none')}.</p>",
            "<h2>Files</h2>",
            "<table><tr><th>file</th><th>records</th><th>what</th></tr>",
            *rows,
            "</table>",
            "<h2>Flow runs</h2>",
            "<table><tr><th>run</th><th>state</th><th>started</th><th>ended</th></tr>",
            *runs,
            "</table>",
            "</body></html>",
        ]
    )


def write_bundle(
    directory: Path,
    sections: Mapping[str, list[Record]],
    files: Mapping[str, str],
) -> str:
    """Write *sections* (``<stem>.jsonl``) and *files* (name -> text) plus the manifest
    into *directory*, atomically; return the bundle hash."""
    check_target(directory)
    parent = directory.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    partial = parent / f".{directory.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        for name, records in sections.items():
            (partial / f"{name}.jsonl").write_text(jsonl(records), encoding="utf-8")
        for name, text in files.items():
            (partial / name).write_text(text, encoding="utf-8")
        bundle_hash = write_manifest(partial)
        if directory.is_dir():
            directory.rmdir()  # empty (checked above): the rename needs it gone
        partial.rename(directory)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return bundle_hash


def zip_bundle(directory: Path) -> Path:
    """``<directory>.zip`` holding the bundle under its directory name; refused if the
    zip file exists already."""
    target = directory.with_name(directory.name + ".zip")
    if target.exists():
        raise PermanentError(f"{target} exists already")
    with zipfile.ZipFile(target, "x", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, Path(directory.name) / path.relative_to(directory))
    return target
