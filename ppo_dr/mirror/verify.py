"""Checking a repository: structure always, stored data on request.

Quick (the default): config and key, every index file, every indexed pack present
with its recorded size, every manifest readable and every blob it names indexed.
Its round trips grow with the repository's history (a listing of every pack folder,
up to 256; every manifest; every index file), so a mirror run checks what it wrote with
:func:`verify_written` and the whole repository only now and then
(:func:`ppo_dr.mirror.runbook.verify_new_snapshots`).
``read_data``: also download packs and re-hash every blob (all packs, or with
``subset=(n, m)`` the n-th of m slices by pack id, as restic's
``--read-data-subset n/m``, so m runs cover everything once). A damaged blob is
reported once per file that uses it, naming mirror, client, snapshot and path.
With ``client_id`` only packs holding that client's blobs are read, and of a pack
where those are at most half, only their byte ranges (the pack's own sha256 then
stays unchecked: a repository-wide ``read_data`` check covers it).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Mapping

from ppo_dr.errors import DRError
from ppo_dr.ids import check_id
from ppo_dr.mirror.errors import DamagedDataError, WrongKeyError
from ppo_dr.mirror.repository import BlobLocation, Index, PackSlices, Repository, wants_ranges
from ppo_dr.mirror.results import MirrorTarget, Problem, VerifyReport

Ref = tuple[str, str, str]  # client, snapshot, path


def in_subset(pack_id: str, subset: tuple[int, int] | None) -> bool:
    """True if *pack_id* falls in slice n of m (1-based), or no subset is asked."""
    if subset is None:
        return True
    n, m = subset
    if not (m >= 1 and 1 <= n <= m):
        raise ValueError(f"subset must be (n, m) with 1 <= n <= m, got {subset}")
    return int(pack_id[:8], 16) % m == n - 1


def verify(
    target: MirrorTarget,
    *,
    key: bytes | None = None,
    client_id: str | None = None,
    read_data: bool = False,
    subset: tuple[int, int] | None = None,
) -> VerifyReport:
    """Check *target*'s repository; see the module docstring."""
    if client_id is not None:
        check_id(client_id, "client id")
    report, problem, repo = _started(target, key)
    if repo is None:
        return report

    # Snapshots are listed before the index is read: verify takes no lock, and a mirror
    # run writing meanwhile adds packs, then their index, then its snapshot, so every
    # snapshot listed here has its blobs indexed by the time the index is read. (Read
    # the other way round, a snapshot committed in between named blobs "not in the
    # index": seen by the chaos run's verify beside a scheduled mirror.) A prune needs
    # the repository's lock, which verify does not take: do not run them together.
    clients = [client_id] if client_id is not None else repo.list_clients()
    snapshots = {client: repo.list_snapshot_ids(client) for client in clients}

    index = Index()
    for name in repo.index_files():
        try:
            for pack_id, (size, blobs) in repo.read_index_file(name, cached=False).items():
                index.add_pack(pack_id, size, blobs)
        except DRError as exc:
            problem("", "", "", str(exc))

    on_disk = repo.list_packs()
    for pack_id, size in index.packs.items():
        if pack_id not in on_disk:
            problem("", "", "", f"pack {pack_id} is indexed but missing")
        elif on_disk[pack_id] != size:
            problem("", "", "", f"pack {pack_id} has {on_disk[pack_id]} bytes, index says {size}")
        report.packs_checked += 0 if read_data else 1

    refs: dict[str, list[Ref]] = defaultdict(list)
    for client, snaps in snapshots.items():
        for snap in snaps:
            for path, blob_id in _named_blobs(repo, client, snap, problem):
                if blob_id not in index:
                    problem(client, snap, path, f"blob {blob_id} is not in the index")
                refs[blob_id].append((client, snap, path))

    if read_data:
        for pack_id, blobs in index.pack_blobs.items():
            if pack_id not in on_disk or not in_subset(pack_id, subset):
                continue
            if client_id is not None:
                wanted = {b: loc for b, loc in blobs.items() if b in refs}
                if not wanted:
                    continue
                if wants_ranges(index.packs[pack_id], wanted.values()):
                    _check_pack(repo, pack_id, wanted, refs, problem, report, ranged=True)
                    continue
            _check_pack(repo, pack_id, blobs, refs, problem, report)
    report.ok = not report.problems
    return report


def verify_written(
    target: MirrorTarget, *, key: bytes | None = None, snapshots: Mapping[str, str]
) -> VerifyReport:
    """The quick check of what one mirror run wrote: each of *snapshots* (client ->
    snapshot id) readable, every blob it names indexed, and every pack holding those
    blobs present with its indexed size (a missing or resized pack is reported against
    each snapshot that uses it). The index is loaded as the run loads it (kept copies
    checked against their names, ``ppo_dr.mirror.index_cache``).

    Why not :func:`verify`: its round trips grow with the repository's history. Over
    the chaos suite's 300 ms link a run's check took minutes once the repository had
    packs in most of its 256 folders, while this one costs a few round trips per new
    snapshot and a few for all the packs it uses (``Repository.pack_sizes``)."""
    report, problem, repo = _started(target, key)
    if repo is None:
        return report
    try:
        index = repo.load_index()
    except DRError as exc:
        problem("", "", "", str(exc))
        report.ok = False
        return report

    users: dict[str, set[tuple[str, str]]] = defaultdict(set)  # pack -> (client, snapshot)
    for client, snap in sorted(snapshots.items()):
        check_id(client, "client id")
        for path, blob_id in _named_blobs(repo, client, snap, problem):
            loc = index.blobs.get(blob_id)
            if loc is None:
                problem(client, snap, path, f"blob {blob_id} is not in the index")
            else:
                users[loc.pack_id].add((client, snap))

    on_disk = repo.pack_sizes(users)
    for pack_id, used_by in sorted(users.items()):
        report.packs_checked += 1
        size = on_disk.get(pack_id)
        if size is None:
            detail = f"pack {pack_id} is indexed but missing"
        elif size != index.packs[pack_id]:
            detail = f"pack {pack_id} has {size} bytes, index says {index.packs[pack_id]}"
        else:
            continue
        for client, snap in sorted(used_by):
            problem(client, snap, "", detail)
    report.ok = not report.problems
    return report


AddProblem = Callable[[str, str, str, str], None]  # client, snapshot, path, detail


def _started(
    target: MirrorTarget, key: bytes | None
) -> tuple[VerifyReport, AddProblem, Repository | None]:
    """A check of *target* begun: its report, the function that adds a problem to it,
    and the repository, or None when it cannot be opened (the report then says why and
    is not ok; a wrong key is raised)."""
    mid = check_id(target.mirror_id, "mirror id")
    report = VerifyReport(ok=True)

    def problem(client: str, snap: str, path: str, detail: str) -> None:
        report.problems.append(Problem(mid, client, snap, path, detail))

    try:
        return report, problem, Repository.open(target.remote, target.repo_path, mid, key)
    except WrongKeyError:
        raise
    except DRError as exc:
        problem("", "", "", str(exc))
        report.ok = False
        return report, problem, None


def _named_blobs(
    repo: Repository, client: str, snap: str, problem: AddProblem
) -> list[tuple[str, str]]:
    """(path, blob id) of every blob a snapshot names, its trees as ``(tree)``; none,
    with the reason reported, when its manifest (or a tree of it) cannot be read."""
    try:
        manifest = repo.read_manifest(client, snap)
    except DRError as exc:
        problem(client, snap, "", str(exc))
        return []
    named = [(e.path, c) for e in manifest.entries for c in e.chunks]
    return [*named, *(("(tree)", t) for t in manifest.tree_ids)]


def _check_pack(
    repo: Repository,
    pack_id: str,
    blobs: dict[str, BlobLocation],
    refs: dict[str, list[Ref]],
    problem: Callable[[str, str, str, str], None],
    report: VerifyReport,
    *,
    ranged: bool = False,
) -> None:
    """Download one pack and re-hash each of *blobs* in it; report every damaged one
    against each snapshot file that refers to it.

    *ranged* (a client's check) downloads only the ranges holding *blobs*; the pack's
    own hash needs all of it, so that is left to a full check.
    """
    data: bytes | PackSlices
    try:
        data = repo.read_pack_ranges(pack_id, blobs.values()) if ranged else repo.read_pack(pack_id)
    except DRError as exc:
        problem("", "", "", f"pack {pack_id}: {exc}")
        return
    report.packs_checked += 1
    report.bytes_checked += data.size if isinstance(data, PackSlices) else len(data)
    damaged = 0
    for blob_id, loc in blobs.items():
        try:
            repo.extract_blob(data, blob_id, loc)
        except DamagedDataError as exc:
            damaged += 1
            for client, snap, path in refs.get(blob_id, [("", "", "")]):
                problem(client, snap, path, str(exc))
    if isinstance(data, PackSlices) or damaged:
        return
    if hashlib.sha256(data).hexdigest() != pack_id:
        problem("", "", "", f"pack {pack_id}: damaged outside its blobs (trailer)")
