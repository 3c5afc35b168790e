"""``ppo-dr evidence``: export an incident's evidence bundle, or verify one.

``ppo-dr evidence INCIDENT -o DIR [--zip]`` reads the store and the Prefect API (found
as :func:`deployments.prefect_api.api_url` says) and writes the bundle;
``ppo-dr evidence verify DIR`` checks it against its manifest and against the hash the
store recorded. One command with two forms, because ``verify`` is not an incident id.
Exit codes: 0 intact / written, 1 a verified bundle differs, 2 bad input.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from cli.support import FleetOption, fail, open_store, reports_errors
from ppo_dr import config
from ppo_dr.errors import PermanentError

#: Default bound on the wait for task-run records the API has not written yet.
WAIT_S = 60.0


@reports_errors
def evidence_command(
    incident: Annotated[
        str, typer.Argument(help="The incident id (see `incident ls`), or `verify`.")
    ],
    directory: Annotated[
        Path | None, typer.Argument(help="With `verify`: the bundle directory.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="New or empty bundle directory.")
    ] = None,
    zip_: Annotated[bool, typer.Option("--zip", help="Also write DIR.zip.")] = False,
    wait: Annotated[
        float,
        typer.Option(
            "--wait", min=0, help="Wait at most this long (s) for task-run records that lag."
        ),
    ] = WAIT_S,
    fleet: FleetOption = None,
) -> None:
    """Export an incident's evidence (`evidence INCIDENT -o DIR [--zip]`) or check a
    bundle (`evidence verify DIR`): runs, task runs, logs, artifacts, notices, probe
    observations, failover ledger, fleet file, MANIFEST.sha256."""
    if incident == "verify":
        if directory is None:
            raise PermanentError("give the bundle directory: ppo-dr evidence verify DIR")
        _verify(directory, fleet)
        return
    if not incident.isdigit() or int(incident) < 1:
        raise PermanentError(f"{incident!r} is neither an incident id nor `verify`")
    if directory is not None:
        raise PermanentError(f"unexpected argument {directory}: the bundle goes to -o DIR")
    if output is None:
        raise PermanentError("give the bundle directory: -o DIR")
    _export(int(incident), output, zip_, wait, fleet)


def _export(
    incident_id: int, output: Path, make_zip: bool, wait_s: float, fleet: Path | None
) -> None:
    from datetime import UTC, datetime

    from deployments.prefect_api import api_url, use_api
    from deployments.run_history import incident_run_history
    from ppo_dr.evidence import RunsRead, export_bundle
    from ppo_dr.evidence.bundle import check_target
    from ppo_dr.inventory import load_fleet
    from ppo_dr.run_links import ui_base

    check_target(output)
    url = api_url()
    if url is None:
        raise PermanentError(
            "no Prefect API known: set PREFECT_API_URL or start `ppo-dr serve` (the run "
            "history is half of the evidence)"
        )
    path = fleet or config.fleet_file()
    flt = load_fleet(path) if path.exists() else None

    def read_runs(tag: str, run_ids: Iterable[str]) -> RunsRead:
        typer.echo(
            f"reading the run history from {url}; waiting up to {wait_s:g} s for task-run "
            "records the server has not written yet"
        )
        return incident_run_history(tag, run_ids, wait_s=wait_s)

    with open_store(fleet) as store, use_api(url):
        result = export_bundle(
            store,
            incident_id,
            output,
            read_runs=read_runs,
            wait_bound_s=wait_s,
            now=datetime.now(UTC),
            fleet=flt,
            fleet_path=path if flt else None,
            api_url=url,
            ui_url=ui_base(url),
            make_zip=make_zip,
        )
    runs = result.runs
    if runs.lagging:
        typer.echo(
            f"stopped waiting after {runs.waited_s:.0f} s: task runs of {len(runs.lagging)} "
            f"flow run(s) may be incomplete: {', '.join(runs.lagging)}"
        )
    else:
        typer.echo(f"task-run records complete after {runs.waited_s:.1f} s")
    typer.echo(f"evidence of incident {incident_id}: {result.files} files in {result.directory}")
    if result.zip_path is not None:
        typer.echo(f"zip: {result.zip_path} (sha256 {result.zip_sha256})")
    typer.echo(f"bundle sha256 {result.bundle_hash} (recorded on the incident's timeline)")


def _verify(directory: Path, fleet: Path | None) -> None:
    from ppo_dr.evidence import check_bundle, recorded_hashes

    check = check_bundle(directory)
    typer.echo(
        f"bundle {directory}: {check.files} files in the manifest, sha256 {check.bundle_hash}"
    )
    for label, names in (
        ("added", check.added),
        ("removed", check.removed),
        ("edited", check.edited),
    ):
        for name in names:
            typer.echo(f"  {label}: {name}")
    if not check.intact:
        raise fail("bundle NOT intact: it differs from its manifest", 1)
    typer.echo("every file matches MANIFEST.sha256")
    incident_id = _bundle_incident(directory)
    if incident_id is None:
        return
    with open_store(fleet) as store:
        if store.incident(incident_id) is None:
            typer.echo(f"this store has no incident {incident_id}: compare the hash by hand")
            return
        recorded = recorded_hashes(store, incident_id)
    matches = [at for at, digest in recorded if digest == check.bundle_hash]
    if matches:
        typer.echo(
            f"matches the hash recorded for incident {incident_id} "
            f"at {matches[0]:%Y-%m-%d %H:%M:%S}Z"
        )
    elif recorded:
        raise fail(
            f"bundle hash NOT among the {len(recorded)} recorded for incident {incident_id}", 1
        )
    else:
        typer.echo(f"no bundle hash recorded for incident {incident_id} in this store")


def _bundle_incident(directory: Path) -> int | None:
    try:
        line = (directory / "bundle.jsonl").read_text(encoding="utf-8").splitlines()[0]
        value = json.loads(line).get("incident_id")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
