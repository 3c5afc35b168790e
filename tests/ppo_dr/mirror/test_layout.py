"""File names on a mirror say how to open the file, and docs/repository.md's by-hand
restore recipe works on a repository as we write it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ppo_dr.mirror.api import ClientSource, snapshot_server
from ppo_dr.transport import LocalRemote
from tests.ppo_dr.mirror.helpers import T0, local_target

ROOT = Path(__file__).resolve().parents[3]
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _documents(repo: Path) -> list[Path]:
    return sorted(p for p in [*repo.glob("index/*"), *repo.glob("snapshots/*/*")] if p.is_file())


def _snapshot(tmp_path: Path, key: bytes | None) -> tuple[Path, Path]:
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a.txt").write_bytes(b"hello " * 50_000)  # > 256 KiB: several chunks
    target = local_target(tmp_path, "m1")
    results = snapshot_server(
        LocalRemote(), "app1", [ClientSource("c1", str(src))], [target], key=key, taken_at=T0
    )
    assert results[0].per_mirror["m1"].ok
    return src, Path(target.repo_path)


def test_unencrypted_documents_are_named_json_zst(tmp_path: Path) -> None:
    _, repo = _snapshot(tmp_path, None)
    docs = _documents(repo)
    assert {p.parent.name for p in docs} == {"index", "c1"}
    for path in docs:
        assert path.name.endswith(".json.zst"), path
        assert path.read_bytes().startswith(ZSTD_MAGIC)
    assert (repo / "snapshots" / "c1" / "2026-11-30T05-00-00Z.json.zst").is_file()


def test_encrypted_documents_are_named_json_zst_enc(tmp_path: Path) -> None:
    _, repo = _snapshot(tmp_path, os.urandom(32))
    docs = _documents(repo)
    assert docs
    for path in docs:
        assert path.name.endswith(".json.zst.enc"), path
        assert not path.read_bytes().startswith(ZSTD_MAGIC)
    assert (repo / "snapshots" / "c1" / "2026-11-30T05-00-00Z.json.zst.enc").is_file()


def _recipe() -> tuple[str, str, str, str]:
    text = (ROOT / "docs" / "repository.md").read_text()
    match = re.search(r"python3 - (\S+) '([^']+)' > \S+ <<'PY'\n(.*?)\nPY\n", text, re.S)
    assert match, "recipe not found in docs/repository.md"
    walk = re.search(r"with a walk:\n\n```python\n(.*?)```", text, re.S)
    assert walk, "tree walk not found in docs/repository.md"
    manifest, path, script = match.groups()
    return manifest, path, script, walk.group(1)


def _run(script: str, repo: Path, *args: str) -> bytes:
    return subprocess.run(
        [sys.executable, "-", *args],
        input=script.encode(),
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout


NEEDS_ZSTD = pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd command")


@NEEDS_ZSTD
def test_the_by_hand_restore_recipe_in_the_docs_works(tmp_path: Path) -> None:
    src, repo = _snapshot(tmp_path, None)
    manifest, path, script, walk = _recipe()
    assert _run(script, repo, manifest, path) == (src / path).read_bytes()
    listing = _run(script[: script.index("m = doc(sys.argv[1])")] + walk, repo, manifest)
    rows = [line.split(" ") for line in listing.decode().splitlines()]
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("docs", "dir", ""),
        ("docs/a.txt", "file", "300000"),
    ]


@NEEDS_ZSTD
def test_the_by_hand_recipe_reads_a_version_1_manifest(tmp_path: Path) -> None:
    repo = Path(__file__).parent / "data" / "v1" / "plain"
    _, _, script, _ = _recipe()
    out = _run(script, repo, "snapshots/c1/2026-11-30T06-00-00Z.json.zst", "docs/a.txt")
    assert out == b"hello " * 50_000
