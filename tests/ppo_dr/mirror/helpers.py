"""Building and comparing trees for the mirror tests (plain functions, real disk)."""

from __future__ import annotations

import json
import os
import posixpath
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ppo_dr.mirror.api import MirrorTarget
from ppo_dr.mirror.manifest import Manifest
from ppo_dr.mirror.repository import Repository
from ppo_dr.transport import LocalRemote

T0 = datetime(2026, 11, 30, 5, 0, 0, tzinfo=UTC)


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything restore must reproduce: type, mode, mtime (s), content / link target."""
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", str(full.readlink()))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode), int(st.st_mtime))
            else:
                found[rel] = (
                    "file",
                    stat.S_IMODE(st.st_mode),
                    int(st.st_mtime),
                    full.read_bytes(),
                )
    return found


def local_target(base: Path, mirror_id: str) -> MirrorTarget:
    return MirrorTarget(mirror_id, LocalRemote(), str(base / mirror_id / "repos" / "app1"))


OLD, FUTURE = -86_400 * 365 * 5, 4_102_444_800  # 1965 and 2100
TOP_MTIME = 1_650_000_000  # of the top directory of odd_tree


def odd_tree(root: Path) -> None:
    """A tree made to trip backup tools: names, links, modes, times, holes, empties."""
    names = root / "names"
    names.mkdir(parents=True)
    for name in ("spa ce", "new\nline", "back\\slash", "ünï", "-dash", "*?[", "'q\"", ".hidden"):
        (names / name).write_bytes(name.encode())
    (names / os.fsdecode(b"latin1-\xe9\xff")).write_bytes(b"not utf-8")
    deep = root / "/".join(f"d{i}" for i in range(30))
    deep.mkdir(parents=True)
    (deep / "leaf").write_bytes(b"deep")
    (root / "empty" / "emptier").mkdir(parents=True)
    links = root / "links"
    links.mkdir()
    for name, target in (
        ("rel", "../names/spa ce"),
        ("abs", "/etc/passwd"),
        ("dangling", "nowhere/at/all"),
        ("to-dir", "../empty"),
        ("self", "self"),
    ):
        (links / name).symlink_to(target)
        os.utime(links / name, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    sparse = root / "sparse.img"
    with sparse.open("wb") as handle:
        handle.write(os.urandom(70_000))
        handle.seek(8 << 20)
        handle.write(b"tail")
    (root / "big").write_bytes(os.urandom(3_000_000))
    os.link(root / "big", root / "names" / "big-again")  # hard links, across directories
    os.link(root / "big", deep / "big-deep")
    (root / "pair").write_bytes(b"two names")
    os.link(root / "pair", root / "pair-2")
    (root / "old").write_bytes(b"old")
    os.utime(root / "old", (OLD, OLD))
    (root / "future").write_bytes(b"future")
    os.utime(root / "future", (FUTURE, FUTURE))
    (root / "setgid").mkdir()
    (root / "setgid").chmod(0o2775)
    (root / "sticky").mkdir()
    (root / "sticky").chmod(0o1777)
    (root / "ro").mkdir()
    (root / "ro" / "inside").write_bytes(b"x")
    (root / "ro" / "inside").chmod(0o444)
    (root / "ro").chmod(0o555)
    for directory, when in ((deep, OLD), (root / "empty", FUTURE), (root, TOP_MTIME)):
        os.utime(directory, (when, when))


def itemised_differences(src: Path, out: Path) -> list[str]:
    """rsync's itemised comparison (checksums, links, perms, times): empty if identical."""
    done = subprocess.run(
        ["rsync", "-rlptcni", "--delete", f"{src}/", f"{out}/"],
        capture_output=True,
        check=True,
    )
    return done.stdout.decode(errors="replace").splitlines()


def inode_groups(root: Path) -> set[frozenset[str]]:
    """The sets of paths (relative to *root*) that share an inode, for files with several."""
    groups: dict[int, set[str]] = {}
    for path in root.rglob("*"):
        st = path.lstat()
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            groups.setdefault(st.st_ino, set()).add(str(path.relative_to(root)))
    return {frozenset(g) for g in groups.values()}


def v1_manifest_bytes(manifest: Manifest) -> bytes:
    """*manifest* as a version 1 document listing every path, as ppo-dr wrote them
    before tree objects (and as a hostile mirror still may: version 1 is read)."""
    doc = {"version": 1, **manifest.fields(), "entries": [e.to_json() for e in manifest.entries]}
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode()


def write_v1_manifest(repo: Repository, manifest: Manifest) -> None:
    """Store *manifest* in *repo* as a version 1 document (see v1_manifest_bytes)."""
    path = repo.manifest_path(manifest.client_id, manifest.snapshot_id)
    repo.remote.mkdir_p(posixpath.dirname(path), 0o700)
    repo.remote.write_bytes(path, repo.codec.seal_document(v1_manifest_bytes(manifest)), 0o600)


def count_index_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the index files read and parsed from now on (whichever way:
    one by one or into the merged cache's columns)."""
    read: list[str] = []
    real = Repository._index_document

    def counting(self: Repository, name: str, cached: bool = True) -> object:
        read.append(name)
        return real(self, name, cached)

    monkeypatch.setattr(Repository, "_index_document", counting)
    return read
