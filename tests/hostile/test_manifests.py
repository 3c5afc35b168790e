"""Hostile snapshot manifests against the restore: a manifest is read from a mirror,
so whoever controls a mirror controls it. Every escape route is refused before a
single byte is written; an odd but legal name lands inside the target only."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppo_dr.errors import UnsafeInputError
from ppo_dr.mirror.api import ensure_repository, restore
from ppo_dr.mirror.manifest import Entry, Manifest
from ppo_dr.mirror.repository import Repository
from ppo_dr.transport import EntryType, LocalRemote
from tests.ppo_dr.mirror.helpers import local_target, write_v1_manifest

DIR, FILE, LINK = EntryType.DIR, EntryType.FILE, EntryType.SYMLINK


def _file(path: str) -> Entry:
    return Entry(path, FILE, 0o644, 0, 0, None, ())


OUT = Entry("out", LINK, 0o777, 0, target="/tmp")


#: (name, entries): each must be refused as a whole.
HOSTILE_MANIFESTS = [
    ("dot-dot", [_file("../escaped")]),
    ("dot-dot deep", [Entry("a", DIR, 0o755, 0), _file("a/../../escaped")]),
    ("absolute", [_file("/tmp/escaped")]),
    ("NUL", [_file("a\x00b")]),
    ("symlink then file", [OUT, _file("out/escaped")]),
    ("symlink then dir", [OUT, Entry("out/x", DIR, 0o755, 0)]),
    ("dir then symlink", [Entry("d", DIR, 0o755, 0), Entry("d", LINK, 0o777, 0, target="/tmp")]),
    ("file without its dir", [_file("nowhere/escaped")]),
]  # fmt: skip


def _write(tmp_path: Path, entries: list[Entry]) -> Path:
    target = local_target(tmp_path, "m1")
    ensure_repository(target, app_server="app1")
    repo = Repository.open(target.remote, target.repo_path, "m1", None)
    write_v1_manifest(repo, Manifest("c1", "2026-11-30T05-00-00Z", "app1", entries))
    return tmp_path


@pytest.mark.parametrize(
    "entries", [m[1] for m in HOSTILE_MANIFESTS], ids=[m[0] for m in HOSTILE_MANIFESTS]
)
def test_a_hostile_manifest_is_refused_before_anything_is_written(
    tmp_path: Path, entries: list[Entry]
) -> None:
    _write(tmp_path, entries)
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeInputError, match="restore refused"):
        restore([local_target(tmp_path, "m1")], "c1", "latest", LocalRemote(), str(dest))
    assert not dest.exists() or not any(dest.rglob("*"))
    assert not Path("/tmp/escaped").exists() and not (tmp_path / "escaped").exists()


def test_a_newline_in_a_name_is_legal_and_stays_inside_the_target(tmp_path: Path) -> None:
    _write(tmp_path, [Entry("a", DIR, 0o755, 0), _file("a/line\nbreak"), _file("b\\c")])
    dest = tmp_path / "dest"
    restore([local_target(tmp_path, "m1")], "c1", "latest", LocalRemote(), str(dest))
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "a", "a/line\nbreak", "b\\c",
    ]  # fmt: skip
