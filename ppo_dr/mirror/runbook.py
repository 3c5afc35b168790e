"""The hourly mirror runbook's steps, for one app server, without Prefect.

The flows (``flows/mirror.py``) call these through thin tasks; ``ppo-dr mirror run``
calls them directly. In order:

1. :func:`snapshot_app_server` — connect to the app server and its mirrors (host keys
   pinned by the fleet), make sure each mirror has the server's repository, run the
   per-client ``snapshot-hook`` on the app server first if asked, and snapshot every
   client to every reachable mirror (each changed file read once). A mirror that cannot
   be reached is left out and reported; the others still get their snapshot.
2. :func:`record_in_catalogue` — one catalogue row per (client, mirror): ``complete``
   or ``missing`` (the next run fills the gap; chunks already stored are reused).
3. :func:`verify_new_snapshots` — a quick ``verify`` of each mirror that took
   snapshots, then each new snapshot is marked verified (or damaged) in the store.
4. :func:`client_rows` — the per-client table the artifacts and the CLI print.

:func:`mirror_every_home` runs 1-3 for every server to mirror (:func:`mirrored_servers`)
in one process, without Prefect: the demo, the tests and the benchmarks use it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ppo_dr import config
from ppo_dr.errors import DRError, PermanentError, TransientError
from ppo_dr.fleet_access import (
    FleetAccess,
    client_ids_on,
    home_server,
    homes,
    mirror_plan,
)
from ppo_dr.mirror.fleet_targets import client_sources, mirror_targets

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet
    from ppo_dr.mirror.api import ClientSnapshotResult, MirrorTarget
    from ppo_dr.store import Snapshot, Store
    from ppo_dr.transport import Remote

HOOK_COMMAND = "snapshot-hook"
HOOK_TIMEOUT_S = 300.0
SNAPSHOT_ID_FORMAT = "%Y-%m-%dT%H-%M-%SZ"  # as the repository names them (docs/repository.md)
#: A mirror run also checks the whole repository (``verify``) when this machine has not
#: done so without a problem for this long (seconds), or cannot tell.
WHOLE_CHECK_EVERY_S = 24 * 3600.0


def store_url(fleet: Fleet | None) -> str:
    """$PPO_DR_DB_URL, else the fleet's ``store.url`` (or its env secret), else the default."""
    named = os.environ.get("PPO_DR_DB_URL")
    if named:
        return named
    if fleet is not None:
        if fleet.store.url:
            return fleet.store.url
        ref = fleet.store.url_secret
        if ref is not None and ref.env and os.environ.get(ref.env):
            return os.environ[ref.env]
    return config.default_store_url()


def placeholder_snapshot_id(taken_at: datetime) -> str:
    """The id a snapshot taken at *taken_at* gets (used when no mirror wrote it)."""
    return taken_at.astimezone(UTC).strftime(SNAPSHOT_ID_FORMAT)


# --------------------------------------------------------------------------- 1. snapshot


def snapshot_hook(source: Remote, timeout: float = HOOK_TIMEOUT_S) -> Callable[[str], None]:
    """The pre-snapshot hook: ``snapshot-hook <client>`` on the app server, bounded.

    The client id is validated before it reaches the command (argv, never a shell
    line). A timeout is transient (the transport stops the command on the server);
    a non-zero exit is permanent: the server refused or the dump failed.
    """
    from ppo_dr.ids import check_id

    def hook(client_id: str) -> None:
        result = source.exec([HOOK_COMMAND, check_id(client_id, "client id")], timeout=timeout)
        if not result.ok:
            detail = (result.stderr or result.stdout).decode("utf-8", "replace").strip()
            first = detail.splitlines()[0] if detail else "no output"
            raise PermanentError(
                f"{source.label}: {HOOK_COMMAND} {client_id} exited {result.exit_status}: {first}"
            )

    return hook


@dataclass(frozen=True)
class ServerSnapshot:
    """What one run of one app server did: per client and mirror, and what was left out."""

    server_id: str
    dc: str
    taken_at: datetime
    clients: list[str]
    mirror_ids: list[str]  # every mirror of the server, on-site first
    results: list[ClientSnapshotResult]
    unreachable: dict[str, str] = field(default_factory=dict)  # mirror id -> why
    duration_s: float = 0.0
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # client -> (files, bytes)
    root_sha256: dict[tuple[str, str], str] = field(default_factory=dict)  # (client, mirror)
    placements: dict[str, str] = field(default_factory=dict)  # the store's, when given

    def outcome(self, client_id: str, mirror_id: str) -> tuple[str, str, int, int]:
        """(status, error, bytes sent, new chunks) of *client_id* on *mirror_id*."""
        result = next((r for r in self.results if r.client_id == client_id), None)
        if mirror_id in self.unreachable:
            return "missing", self.unreachable[mirror_id], 0, 0
        if result is None:
            return "missing", "not snapshotted", 0, 0
        got = result.per_mirror.get(mirror_id)
        if got is None:
            return "missing", "no outcome reported", 0, 0
        if got.ok and got.snapshot_written:
            return "complete", "", got.bytes_sent, got.new_chunks
        return "missing", got.error or "not written", got.bytes_sent, got.new_chunks

    def snapshot_id(self, client_id: str) -> str:
        result = next((r for r in self.results if r.client_id == client_id), None)
        if result is not None and result.snapshot_id:
            return str(result.snapshot_id)
        return placeholder_snapshot_id(self.taken_at)

    @property
    def missing(self) -> list[tuple[str, str]]:
        """(client, mirror) pairs that did not get this run's snapshot."""
        return [
            (c, m)
            for c in self.clients
            for m in self.mirror_ids
            if self.outcome(c, m)[0] != "complete"
        ]


def _prepare_targets(
    targets: Sequence[MirrorTarget], server_id: str, key: bytes | None, compression: str
) -> tuple[list[MirrorTarget], dict[str, str]]:
    from ppo_dr.mirror.api import ensure_repository

    ready: list[MirrorTarget] = []
    failed: dict[str, str] = {}
    for target in targets:
        try:
            ensure_repository(target, app_server=server_id, key=key, compression=compression)
        except TransientError as exc:
            failed[target.mirror_id] = str(exc)
        else:
            ready.append(target)
    return ready, failed


def snapshot_app_server(
    access: FleetAccess,
    server_id: str,
    clients: Iterable[str] | None = None,
    *,
    hook: bool = True,
    hook_timeout: float = HOOK_TIMEOUT_S,
    taken_at: datetime | None = None,
    progress: Callable[[str], None] | None = None,
    placements: Mapping[str, str] | None = None,
) -> ServerSnapshot:
    """Snapshot the clients of *server_id* (all, or *clients*) to every reachable mirror.

    Which clients live there comes from *placements* (the store's, client -> server)
    where given, else from fleet.yaml: after a failover the new home picks a client up
    and the old one no longer does. A spare turned home is mirrored to the mirror pair
    :func:`ppo_dr.fleet_access.mirror_plan` derives for it.

    Raises PermanentError (bad ids, changed host key, refused key) before anything is
    written; TransientError if the app server or every mirror is unreachable. The
    fleet's mirror policy decides encryption, compression and whether the pre-snapshot
    hook runs (*hook* can only turn it off).
    """
    from ppo_dr.mirror.api import snapshot_server

    fleet = access.fleet
    homes = dict(placements or {})
    app = home_server(fleet, server_id, homes)
    chosen = client_ids_on(fleet, app.id, clients, homes)
    sources = client_sources(fleet, app.id, chosen, homes)
    taken = (taken_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    key = access.mirror_key
    hook = hook and fleet.mirror.pre_snapshot_hook
    started = time.monotonic()
    # Every connection first, so a bad host key anywhere stops the run before a write.
    source = access.remote(app.id)
    connected = mirror_targets(fleet, app.id, access, placements=homes)
    targets, not_ready = _prepare_targets(connected.targets, app.id, key, fleet.mirror.compression)
    unreachable = {**connected.unreachable, **not_ready}
    mirror_ids = [m.id for m, _ in mirror_plan(fleet, app.id, homes)]
    if not targets:
        raise TransientError(
            f"no mirror of {app.id} reachable: "
            + "; ".join(f"{m}: {why}" for m, why in unreachable.items())
        )
    results = snapshot_server(
        source,
        app.id,
        sources,
        targets,
        key=key,
        taken_at=taken,
        hook=snapshot_hook(source, hook_timeout) if hook else None,
        progress=progress,
    )
    run = ServerSnapshot(
        server_id=app.id,
        dc=app.dc,
        taken_at=taken,
        clients=chosen,
        mirror_ids=mirror_ids,
        results=list(results),
        unreachable=unreachable,
        duration_s=time.monotonic() - started,
        placements=homes,
    )
    _read_back(run, targets, key)
    return run


def _read_back(run: ServerSnapshot, targets: Sequence[MirrorTarget], key: bytes | None) -> None:
    """Fill *run*'s (files, bytes) per client, from a manifest a mirror holds, and the
    hash of each new snapshot's root object per mirror (the catalogue keeps both)."""
    from ppo_dr.mirror.repository import Repository
    from ppo_dr.mirror.root_hash import snapshot_root_sha256

    repos: dict[str, Any] = {}
    for client in run.clients:
        for target in targets:
            if run.outcome(client, target.mirror_id)[0] != "complete":
                continue
            try:
                repo = repos.get(target.mirror_id) or Repository.open(
                    target.remote, target.repo_path, target.mirror_id, key
                )
                repos[target.mirror_id] = repo
                snapshot_id = run.snapshot_id(client)
                run.root_sha256[(client, target.mirror_id)] = snapshot_root_sha256(
                    repo, client, snapshot_id
                )
                if client not in run.sizes:
                    manifest = repo.read_manifest(client, snapshot_id)
                    run.sizes[client] = (manifest.files, manifest.total_bytes)
            except DRError:
                continue  # a courtesy: the catalogue falls back to the scan, and no hash


# --------------------------------------------------------------------------- 2. catalogue


def record_in_catalogue(
    store: Store, run: ServerSnapshot, *, flow_run_id: str | None = None
) -> list[Snapshot]:
    """One catalogue row per (client, mirror) of *run*: complete or missing."""
    rows: list[Snapshot] = []
    for result_client in run.clients:
        result = next((r for r in run.results if r.client_id == result_client), None)
        scanned = result.files_scanned if result else 0
        read = result.bytes_read if result else 0
        for mirror_id in run.mirror_ids:
            status, _error, sent, _chunks = run.outcome(result_client, mirror_id)
            rows.append(
                store.record_snapshot(
                    server_id=run.server_id,
                    client_id=result_client,
                    mirror_id=mirror_id,
                    snapshot_id=run.snapshot_id(result_client),
                    taken_at=run.taken_at,
                    files=run.sizes.get(result_client, (scanned, 0))[0],
                    bytes=run.sizes.get(result_client, (0, read))[1],
                    new_bytes=sent,
                    status=status,
                    flow_run_id=flow_run_id,
                    root_sha256=run.root_sha256.get((result_client, mirror_id)),
                    run_seconds=run.duration_s,
                )
            )
    return rows


# --------------------------------------------------------------------------- 3. verify


@dataclass(frozen=True)
class VerifyOutcome:
    """Per mirror: ok, the problems found (as text), or why it could not be checked."""

    mirror_id: str
    ok: bool
    problems: list[str]
    error: str = ""
    marked: int = 0


def verify_new_snapshots(
    access: FleetAccess,
    store: Store,
    run: ServerSnapshot,
    *,
    now: datetime | None = None,
) -> list[VerifyOutcome]:
    """Quick-verify each mirror that took snapshots in *run*; mark them in the store.

    Each mirror's new snapshots are checked (``verify_written``: their manifests, their
    blobs indexed, the packs holding them present at their size), and the whole
    repository too (``verify``) when :func:`whole_check_due` says so. A snapshot is
    marked verified (complete) when no check named a problem in its client or the
    whole repository, damaged when one did. A mirror that cannot be checked now is
    reported and its snapshots stay unverified (they do not count for the RPO until a
    later check).
    """
    from ppo_dr.mirror.api import verify, verify_written
    from ppo_dr.mirror.index_cache import IndexCache

    key = access.mirror_key
    cache = IndexCache.default()
    outcomes: list[VerifyOutcome] = []
    for mirror_id in run.mirror_ids:
        written = [c for c in run.clients if run.outcome(c, mirror_id)[0] == "complete"]
        if not written:
            continue
        try:
            connected = mirror_targets(
                access.fleet, run.server_id, access, mirrors=[mirror_id], placements=run.placements
            )
            if not connected.targets:
                raise TransientError(connected.unreachable.get(mirror_id, "unreachable"))
            target = connected.targets[0]
            snapshots = {c: run.snapshot_id(c) for c in written}
            reports = [verify_written(target, key=key, snapshots=snapshots)]
            repo = IndexCache.repo_key(mirror_id, target.repo_path.rstrip("/") or "/")
            started = time.time()
            if whole_check_due(cache.whole_check_at(repo) if cache else None, started):
                reports.append(verify(target, key=key))
                if cache is not None and reports[-1].ok:
                    cache.note_whole_check(repo, started)
        except DRError as exc:
            outcomes.append(VerifyOutcome(mirror_id, False, [], error=str(exc)))
            continue
        problems = [p for report in reports for p in report.problems]
        damaged = {p.client_id for p in problems if p.client_id}
        repo_wide = [p for p in problems if not p.client_id]
        when = now or datetime.now(UTC)
        marked = 0
        for client in written:
            ok = client not in damaged and not repo_wide
            store.mark_snapshot_verified(mirror_id, client, run.snapshot_id(client), when, ok)
            marked += 1
        outcomes.append(
            VerifyOutcome(
                mirror_id,
                ok=not problems,
                problems=[_problem_text(p) for p in problems],
                marked=marked,
            )
        )
    return outcomes


def whole_check_due(last: float | None, now: float) -> bool:
    """Whether a mirror run checks the whole repository: never checked whole (or not
    known), last checked :data:`WHOLE_CHECK_EVERY_S` ago or more, or a clock that went
    back."""
    return last is None or not 0 <= now - last < WHOLE_CHECK_EVERY_S


def _problem_text(problem: Any) -> str:
    parts = [
        f"mirror {problem.mirror_id}",
        f"client {problem.client_id}" if problem.client_id else "",
        f"snapshot {problem.snapshot_id}" if problem.snapshot_id else "",
        f"file {problem.path!r}" if problem.path else "",
    ]
    return ", ".join(p for p in parts if p) + f": {problem.detail}"


# --------------------------------------------------------------------------- 4. the table


def client_rows(run: ServerSnapshot) -> list[dict[str, Any]]:
    """One row per client: what was read, what each mirror received, how long it took."""
    rows: list[dict[str, Any]] = []
    for client in run.clients:
        result = next((r for r in run.results if r.client_id == client), None)
        row: dict[str, Any] = {
            "client": client,
            "snapshot": run.snapshot_id(client),
            "files_scanned": result.files_scanned if result else 0,
            "files_changed": result.files_changed if result else 0,
            "bytes_read": result.bytes_read if result else 0,
        }
        for mirror_id in run.mirror_ids:
            status, _error, sent, chunks = run.outcome(client, mirror_id)
            row[f"sent_{mirror_id}"] = sent if status == "complete" else f"MISSING ({sent})"
            row[f"new_chunks_{mirror_id}"] = chunks
        row["duration_s"] = round(result.duration_s, 2) if result else 0.0
        row["changed_during_read"] = len(result.changed_during_read) if result else 0
        rows.append(row)
    return rows


def human_bytes(n: int) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1.1 GiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def total_sent(run: ServerSnapshot) -> dict[str, int]:
    """Bytes sent to each mirror over the whole run."""
    return {m: sum(run.outcome(c, m)[2] for c in run.clients) for m in run.mirror_ids}


# --------------------------------------------------------------------------- the fleet


def mirrored_servers(fleet: Fleet, placements: Mapping[str, str] | None = None) -> list[str]:
    """Every server to mirror: the app servers, and spares the placements made homes."""
    hosting = set(homes(fleet, placements).values())
    return [
        s.id for s in fleet.servers if s.role == "app" or (s.role == "spare" and s.id in hosting)
    ]


@dataclass(frozen=True)
class MirroredServer:
    """One server's mirror run, recorded in the catalogue, and its verify outcomes."""

    run: ServerSnapshot
    checks: list[VerifyOutcome]


def mirror_every_home(
    access: FleetAccess, store: Store, server_ids: Sequence[str] | None = None
) -> list[MirroredServer]:
    """Snapshot, catalogue and verify every server to mirror (or those of *server_ids*),
    one after the other: the hourly mirror of the whole fleet, in this process.

    Where a client lives is the store's placement (a failover moves clients), not
    fleet.yaml's first home.
    """
    placements = {p.client_id: p.server_id for p in store.placements()}
    chosen = mirrored_servers(access.fleet, placements) if server_ids is None else server_ids
    done = []
    for server_id in chosen:
        run = snapshot_app_server(access, server_id, placements=placements)
        record_in_catalogue(store, run)
        done.append(MirroredServer(run, verify_new_snapshots(access, store, run)))
    return done
