"""``ppo-dr mirror``: run, list, verify, restore and prune mirror snapshots by hand.

These commands talk to the servers directly (SSH, host keys pinned by the fleet
file) and to the state store; they never need Prefect. ``run`` does what one
scheduled ``mirror-server`` run does (snapshot, catalogue, verify) for an operator
at a terminal; the schedule, the artifacts and the mirror-stale alerts belong to
the flows. Like the flows, every command finds a client where the store's placements
put it (fleet.yaml only says where it started): after a failover, ``run`` mirrors the
client from its new home (a spare turned home included) and no longer from the old.
Ids are checked before anything is touched; errors are one line and exit code 2,
never a traceback.

Exit codes: 0 done; 1 done, but something is missing or damaged (a mirror did not
get its snapshot, verify found problems, restore refused files); 2 error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.support import FleetOption, command_group, reports_errors, takes_options
from ppo_dr import config
from ppo_dr.errors import DRError, PermanentError, UnsafeInputError
from ppo_dr.ids import check_id, is_valid_id

if TYPE_CHECKING:
    from ppo_dr.fleet_access import FleetAccess
    from ppo_dr.inventory import Fleet
    from ppo_dr.mirror.api import MirrorTarget
    from ppo_dr.mirror.runbook import ServerSnapshot

mirror_app = command_group(
    "Point-in-time mirrors of the app servers: run, ls, verify, restore, prune."
)

ClientOption = Annotated[
    list[str] | None,
    typer.Option("--client", "-c", help="Only this client (repeatable)."),
]
MirrorOption = Annotated[
    str | None, typer.Option("--mirror", "-m", help="Only this mirror server.")
]
ServerOption = Annotated[
    str | None, typer.Option("--server", "-s", help="Only this app server's repository.")
]


@dataclass(frozen=True)
class Repositories:
    """Which repositories ``ls`` and ``verify`` read: a client's, a mirror's, a server's."""

    client: ClientOption = None
    mirror: MirrorOption = None
    server: ServerOption = None


def _fleet(path: Path | None) -> Fleet:
    from ppo_dr.inventory import load_fleet

    return load_fleet(Path(path) if path else config.fleet_file())


def _placements(fleet: Fleet) -> dict[str, str]:
    """client -> server from the store's placements (empty for a store never written)."""
    from ppo_dr.mirror.runbook import store_url
    from ppo_dr.store import Store

    with Store.open(store_url(fleet)) as store:
        return {p.client_id: p.server_id for p in store.placements()}


def _client_server(fleet: Fleet, client_id: str, placements: dict[str, str]) -> str:
    """The server *client_id* lives on now (placements, else fleet.yaml)."""
    from ppo_dr.fleet_access import homes

    cid = check_id(client_id, "client id")
    where = homes(fleet, placements)
    if cid not in where:
        raise PermanentError(f"no client {cid!r} in fleet {fleet.name}")
    return where[cid]


def _servers_for(
    fleet: Fleet, server: str | None, clients: list[str] | None, placements: dict[str, str]
) -> list[str]:
    """Homes to act on: *server*, else those of *clients*, else every app server and
    every spare the placements made a home (what the hourly mirror covers)."""
    from ppo_dr.fleet_access import home_server, homes

    if server is not None:
        return [home_server(fleet, server, placements).id]
    if clients:
        return list(dict.fromkeys(_client_server(fleet, c, placements) for c in clients))
    hosting = set(homes(fleet, placements).values())
    return [
        s.id for s in fleet.servers if s.role == "app" or (s.role == "spare" and s.id in hosting)
    ]


def _mirror_filter(fleet: Fleet, mirror: str | None) -> str | None:
    if mirror is None:
        return None
    mid = check_id(mirror, "mirror id")
    try:
        role = fleet.server(mid).role
    except KeyError:
        raise PermanentError(f"no server {mid!r} in fleet {fleet.name}") from None
    if role != "mirror":
        raise PermanentError(f"server {mid!r} is {role!r}, not a mirror")
    return mid


def _targets(
    access: FleetAccess, servers: list[str], mirror: str | None, placements: dict[str, str]
) -> Iterator[tuple[str, MirrorTarget]]:
    """(home, target) for each reachable mirror; unreachable ones are reported."""
    from ppo_dr.fleet_access import mirror_plan
    from ppo_dr.mirror.fleet_targets import mirror_targets

    for server in servers:
        mirrors = [m.id for m, _ in mirror_plan(access.fleet, server, placements)]
        if mirror is not None:
            if mirror not in mirrors:
                continue
            mirrors = [mirror]
        connected = mirror_targets(
            access.fleet, server, access, mirrors=mirrors, placements=placements
        )
        for mid, why in connected.unreachable.items():
            typer.echo(f"warning: {server} on {mid}: unreachable ({why})", err=True)
        for target in connected.targets:
            yield server, target


def _subset(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    n, sep, m = text.partition("/")
    if not sep or not n.isdigit() or not m.isdigit() or not 1 <= int(n) <= int(m):
        raise UnsafeInputError(f"--subset {text!r}: expected n/m with 1 <= n <= m, e.g. 1/24")
    return int(n), int(m)


def _print_run(run: ServerSnapshot) -> None:
    from ppo_dr.mirror.runbook import human_bytes

    typer.echo(
        f"{run.server_id} [{run.dc}]: snapshot {run.taken_at:%Y-%m-%dT%H:%M:%SZ}, "
        f"{len(run.clients)} client(s) in {run.duration_s:.1f} s"
    )
    head = f"  {'client':24} {'files':>6} {'changed':>7} {'read':>10}"
    for mirror_id in run.mirror_ids:
        head += f" {'to ' + mirror_id:>22}"
    typer.echo(head + f" {'time':>7}")
    for client in run.clients:
        result = next((r for r in run.results if r.client_id == client), None)
        line = (
            f"  {client:24} {result.files_scanned if result else 0:>6} "
            f"{result.files_changed if result else 0:>7} "
            f"{human_bytes(result.bytes_read if result else 0):>10}"
        )
        for mirror_id in run.mirror_ids:
            status, _error, sent, _chunks = run.outcome(client, mirror_id)
            cell = human_bytes(sent) if status == "complete" else "MISSING"
            line += f" {cell:>22}"
        typer.echo(line + f" {result.duration_s if result else 0:>6.2f}s")
    for client, mirror_id in run.missing:
        typer.echo(f"  missing: {client} on {mirror_id}: {run.outcome(client, mirror_id)[1]}")


# --------------------------------------------------------------------------- commands


@mirror_app.command("run")
@reports_errors
def run_command(
    server: Annotated[
        str | None, typer.Argument(help="App server to mirror (default: every app server).")
    ] = None,
    client: ClientOption = None,
    hook: Annotated[
        bool, typer.Option("--hook/--no-hook", help="Run snapshot-hook <client> first.")
    ] = True,
    fleet: FleetOption = None,
) -> None:
    """Snapshot clients to their mirrors now, record and verify (what a scheduled run does)."""
    from ppo_dr.fleet_access import FleetAccess, client_ids_on
    from ppo_dr.mirror.runbook import (
        record_in_catalogue,
        snapshot_app_server,
        store_url,
        verify_new_snapshots,
    )
    from ppo_dr.mirror.status import client_statuses, rpo_markdown, stale_after
    from ppo_dr.store import Store

    flt = _fleet(fleet)
    placed = _placements(flt)
    servers = _servers_for(flt, server, client, placed)
    incomplete = False
    with FleetAccess(flt) as access, Store.open(store_url(flt)) as store:
        for sid in servers:
            wanted = (
                [c for c in client if _client_server(flt, c, placed) == sid] if client else None
            )
            chosen = client_ids_on(flt, sid, wanted, placed)
            run = snapshot_app_server(access, sid, chosen, hook=hook, placements=placed)
            record_in_catalogue(store, run)
            checks = verify_new_snapshots(access, store, run)
            _print_run(run)
            for check in checks:
                state = check.error or ("ok" if check.ok else "PROBLEMS")
                typer.echo(f"  verify {check.mirror_id}: {state}")
                for problem in check.problems:
                    typer.echo(f"    {problem}")
            statuses = client_statuses(
                [s for c in chosen for s in store.snapshots(client_id=c)],
                chosen,
                run.mirror_ids,
                now=datetime.now(UTC),
                threshold=stale_after(flt.timing.mirror_cron),
            )
            typer.echo(rpo_markdown(statuses, run.mirror_ids))
            incomplete |= bool(run.missing) or any(not c.ok for c in checks)
    if incomplete:
        raise typer.Exit(1)


@mirror_app.command("ls")
@reports_errors
@takes_options(Repositories, "only")
def ls_command(only: Repositories, fleet: FleetOption = None) -> None:
    """List the snapshots the mirrors hold (read from the mirrors themselves)."""
    from ppo_dr.fleet_access import FleetAccess
    from ppo_dr.mirror.api import list_snapshots
    from ppo_dr.mirror.runbook import human_bytes, store_url
    from ppo_dr.store import Store

    flt = _fleet(fleet)
    mid = _mirror_filter(flt, only.mirror)
    placed = _placements(flt)
    servers = _servers_for(flt, only.server, only.client, placed)
    wanted = [check_id(c, "client id") for c in only.client] if only.client else None
    each: list[str | None] = list(wanted) if wanted else [None]
    with Store.open(store_url(flt)) as store:
        verified = {
            (s.mirror_id, s.client_id, s.snapshot_id): s
            for c in (wanted or [c.id for c in flt.clients])
            for s in store.snapshots(client_id=c)
        }
    typer.echo(
        f"{'server':14} {'mirror':16} {'client':24} {'snapshot':22} {'files':>6} "
        f"{'size':>10}  catalogue"
    )
    count = 0
    with FleetAccess(flt) as access:
        for sid, target in _targets(access, servers, mid, placed):
            for client_id in each:
                if client_id is not None and _client_server(flt, client_id, placed) != sid:
                    continue
                for info in list_snapshots(target, client_id, key=access.mirror_key):
                    row = verified.get((target.mirror_id, info.client_id, info.snapshot_id))
                    state = "-" if row is None else row.status
                    if row is not None and row.verified_at is not None:
                        state += f", verified {row.verified_at:%Y-%m-%d %H:%M}Z"
                    typer.echo(
                        f"{sid:14} {target.mirror_id:16} {info.client_id:24} {info.snapshot_id:22} "
                        f"{info.files:>6} {human_bytes(info.bytes):>10}  {state}"
                    )
                    count += 1
    typer.echo(f"{count} snapshot(s)")


@mirror_app.command("verify")
@reports_errors
@takes_options(Repositories, "only")
def verify_command(
    only: Repositories,
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Re-read and re-hash the packs (full check).")
    ] = False,
    subset: Annotated[
        str | None,
        typer.Option(
            "--subset", help="With --read-data: only part n of m of the packs, e.g. 1/24."
        ),
    ] = None,
    fleet: FleetOption = None,
) -> None:
    """Check the repositories (structure and index; --read-data re-hashes the data)."""
    from ppo_dr.fleet_access import FleetAccess
    from ppo_dr.mirror.api import verify
    from ppo_dr.mirror.runbook import human_bytes, store_url
    from ppo_dr.store import Store

    flt = _fleet(fleet)
    mid = _mirror_filter(flt, only.mirror)
    part = _subset(subset)
    placed = _placements(flt)
    servers = _servers_for(flt, only.server, only.client, placed)
    wanted: list[str | None] = (
        [check_id(c, "client id") for c in only.client] if only.client else [None]
    )
    bad = 0
    checked = 0
    with FleetAccess(flt) as access, Store.open(store_url(flt)) as store:
        for sid, target in _targets(access, servers, mid, placed):
            for client_id in wanted:
                if client_id is not None and _client_server(flt, client_id, placed) != sid:
                    continue
                report = verify(
                    target,
                    key=access.mirror_key,
                    client_id=client_id,
                    read_data=read_data or part is not None,
                    subset=part,
                )
                checked += 1
                what = f"{sid} on {target.mirror_id}" + (f" ({client_id})" if client_id else "")
                typer.echo(
                    f"{what}: {'ok' if report.ok else 'PROBLEMS'}; {report.packs_checked} pack(s), "
                    f"{human_bytes(report.bytes_checked)} read"
                )
                for p in report.problems:
                    bad += 1
                    where = ", ".join(
                        x
                        for x in (
                            f"client {p.client_id}" if p.client_id else "",
                            f"snapshot {p.snapshot_id}" if p.snapshot_id else "",
                            f"file {p.path!r}" if p.path else "",
                        )
                        if x
                    )
                    typer.echo(f"  mirror {p.mirror_id}: {where}: {p.detail}")
                    if p.client_id and p.snapshot_id:
                        _mark_damaged(store, p.mirror_id, p.client_id, p.snapshot_id)
    if checked == 0:
        raise PermanentError("nothing verified: no reachable repository matched")
    if bad:
        raise typer.Exit(1)


def _mark_damaged(store: object, mirror_id: str, client_id: str, snapshot_id: str) -> None:
    from ppo_dr.store import Store

    assert isinstance(store, Store)
    # Not catalogued (taken before the catalogue knew it): nothing to mark.
    with contextlib.suppress(DRError):
        store.mark_snapshot_verified(mirror_id, client_id, snapshot_id, datetime.now(UTC), False)


@mirror_app.command("restore")
@reports_errors
def restore_command(
    client: Annotated[str, typer.Argument(help="The client to restore.")],
    to: Annotated[
        str,
        typer.Option(
            "--to", help="A server id of the fleet, or a local directory (absolute or ./relative)."
        ),
    ],
    snapshot: Annotated[
        str, typer.Option("--snapshot", help="Snapshot id, or 'latest' (newest verified).")
    ] = "latest",
    path: Annotated[
        str | None,
        typer.Option("--path", help="Directory on the server (default: the client's data path)."),
    ] = None,
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=64)] = 4,
    fleet: FleetOption = None,
) -> None:
    """Restore CLIENT's snapshot to a server or a local directory, from its mirrors."""
    from ppo_dr.fleet_access import FleetAccess
    from ppo_dr.mirror.api import restore
    from ppo_dr.mirror.fleet_targets import mirror_targets
    from ppo_dr.mirror.runbook import human_bytes, store_url
    from ppo_dr.transport import LocalRemote, Remote

    flt = _fleet(fleet)
    cid = check_id(client, "client id")
    placed = _placements(flt)
    home = _client_server(flt, cid, placed)  # where its live data is now
    snapshot_id, server_of_repo = _choose_snapshot(flt, store_url(flt), cid, snapshot, home)
    with FleetAccess(flt) as access:
        dest: Remote
        dest_connect: Callable[[], Remote] | None = None
        data_root: str | None = None  # a server's: --path must stay inside it
        if is_valid_id(to) and to in {s.id for s in flt.servers}:
            target = flt.server(to)
            if target.ssh is None:
                raise PermanentError(
                    f"{to} is an S3 mirror, not a server: restore to a server or a local directory"
                )
            if path is None and to == home:
                raise PermanentError(
                    f"{to} is {cid}'s current server: restoring over its live data needs an "
                    "explicit --path"
                )
            dest_path = path or f"{target.data_root}/{flt.client(cid).data_path}"
            dest = access.remote(to)
            dest_connect = access.connector(to)  # restore workers open their own
            data_root = target.data_root
        else:
            if is_valid_id(to) and "/" not in to and not to.startswith("."):
                raise PermanentError(
                    f"--to {to!r} is no server of fleet {flt.name}; "
                    "write a local directory as ./name or an absolute path"
                )
            if path is not None:
                raise UnsafeInputError("--path is for a server; for a local restore give --to DIR")
            dest_path = str(Path(to).expanduser().resolve())
            dest = LocalRemote()
        connected = mirror_targets(flt, server_of_repo, access, placements=placed)
        for mid, why in connected.unreachable.items():
            typer.echo(f"warning: mirror {mid} unreachable ({why})", err=True)
        if not connected.targets:
            raise PermanentError(f"no mirror of {server_of_repo} reachable")
        typer.echo(f"restoring {cid} snapshot {snapshot_id} to {dest.label} {dest_path} ...")
        result = restore(
            connected.targets,
            cid,
            snapshot_id,
            dest,
            dest_path,
            key=access.mirror_key,
            parallel=parallel,
            dest_connect=dest_connect,
            data_root=data_root,
        )
    served = ", ".join(f"{m}: {n}" for m, n in result.served_by.items())
    typer.echo(
        f"restored {result.files} file(s), {human_bytes(result.bytes)} "
        f"in {result.duration_s:.1f} s (blobs served by {served or 'none'})"
    )
    if result.refused:
        typer.echo(f"REFUSED {len(result.refused)} damaged file(s):", err=True)
        for name in result.refused[:50]:
            typer.echo(f"  {name!r}", err=True)
        raise typer.Exit(1)


def _choose_snapshot(
    fleet: Fleet, url: str, client_id: str, wanted: str, home: str
) -> tuple[str, str]:
    """(snapshot id, app server whose repository holds it), from the catalogue."""
    from ppo_dr.mirror.manifest import check_snapshot_id
    from ppo_dr.store import Store

    with Store.open(url) as store:
        if wanted == "latest":
            latest = store.latest_verified_snapshot(client_id)
            if latest is None:
                return "latest", home  # nothing catalogued: the newest on the mirrors
            return latest.snapshot_id, latest.server_id
        sid = check_snapshot_id(wanted)
        rows = [s for s in store.snapshots(client_id=client_id) if s.snapshot_id == sid]
    if not rows:
        return sid, home
    good = [r for r in rows if r.status == "complete"]
    return sid, (good or rows)[0].server_id


@mirror_app.command("prune")
@reports_errors
def prune_command(
    server: ServerOption = None,
    mirror: MirrorOption = None,
    keep_last: Annotated[int | None, typer.Option("--keep-last", min=1)] = None,
    keep_hourly: Annotated[int | None, typer.Option("--keep-hourly", min=0)] = None,
    keep_daily: Annotated[int | None, typer.Option("--keep-daily", min=0)] = None,
    keep_weekly: Annotated[int | None, typer.Option("--keep-weekly", min=0)] = None,
    fleet: FleetOption = None,
) -> None:
    """Delete snapshots beyond the retention policy (the fleet's mirror policy unless
    given here) and the data only they used."""
    from ppo_dr.fleet_access import FleetAccess
    from ppo_dr.mirror.api import prune
    from ppo_dr.mirror.runbook import human_bytes

    flt = _fleet(fleet)
    mid = _mirror_filter(flt, mirror)
    placed = _placements(flt)
    servers = _servers_for(flt, server, None, placed)
    with FleetAccess(flt) as access:
        for sid, target in _targets(access, servers, mid, placed):
            policy = flt.mirror
            result = prune(
                target,
                key=access.mirror_key,
                keep_last=policy.keep_last if keep_last is None else keep_last,
                keep_hourly=policy.keep_hourly if keep_hourly is None else keep_hourly,
                keep_daily=policy.keep_daily if keep_daily is None else keep_daily,
                keep_weekly=policy.keep_weekly if keep_weekly is None else keep_weekly,
            )
            typer.echo(
                f"{sid} on {target.mirror_id}: kept {len(result.kept)}, removed "
                f"{len(result.removed_snapshots)} snapshot(s) and {result.removed_packs} pack(s), "
                f"freed {human_bytes(result.freed_bytes)}"
            )
