"""Seeded client data: deterministic, awkward names, the promised mix and sizes."""

from __future__ import annotations

import hashlib
import os
import random
import time
import zlib
from pathlib import Path

import pytest

from ppo_dr.lab import seed
from ppo_dr.lab.seed import KIB, MIB, seed_client, tree_bytes


def fingerprint(root: Path) -> dict[str, str]:
    """Relative path -> content hash (or link target, or 'dir') of everything under root."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(Path(dirpath) / name, root)] = "dir"
        for name in filenames:
            path = Path(dirpath) / name
            rel = os.path.relpath(path, root)
            if path.is_symlink():
                out[rel] = "-> " + str(path.readlink())
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_same_seed_same_tree_other_seed_other_tree(tmp_path: Path) -> None:
    seed_client(tmp_path / "a", "acme-mining", 2 * MIB, seed=7)
    seed_client(tmp_path / "b", "acme-mining", 2 * MIB, seed=7)
    seed_client(tmp_path / "c", "acme-mining", 2 * MIB, seed=8)
    seed_client(tmp_path / "d", "karoo-logistics", 2 * MIB, seed=7)
    a = fingerprint(tmp_path / "a")
    assert a == fingerprint(tmp_path / "b")
    assert a != fingerprint(tmp_path / "c")
    # Another client's files never share content with this one's (no free dedup).
    hashes_a = {v for v in a.values() if len(v) == 64}
    hashes_d = {v for v in fingerprint(tmp_path / "d").values() if len(v) == 64}
    assert not hashes_a & hashes_d - {hashlib.sha256(b"").hexdigest()}


def test_awkward_names_empty_dir_symlink_and_journal(tmp_path: Path) -> None:
    root = tmp_path / "client"
    seed_client(root, "acme-mining", 2 * MIB)
    for name in ("Résumé 2026.txt", "données/clients à jour.csv", "日本語.md"):
        assert (root / name).is_file() and (root / name).stat().st_size > 0
    assert (root / "projects/Project Ümlaut/specs").is_dir()
    assert any(" " in p.name for p in root.rglob("*") if p.is_file())
    empty = root / seed.EMPTY_DIR
    assert empty.is_dir() and not any(empty.iterdir())
    link = root / seed.SYMLINK
    assert link.is_symlink()
    assert not link.readlink().is_absolute()
    assert link.resolve().is_relative_to(root.resolve()) and link.resolve().is_file()
    journal = root / seed.JOURNAL
    assert journal.is_file() and journal.stat().st_size == 0


@pytest.mark.parametrize("size", [2 * MIB, 10 * MIB])
def test_size_within_20_percent_and_the_mix_of_files(tmp_path: Path, size: int) -> None:
    root = tmp_path / "client"
    stats = seed_client(root, "ubuntu-health", size)
    assert 0.8 * size <= tree_bytes(root) <= 1.2 * size
    assert stats.bytes == tree_bytes(root)
    assert 0.4 <= stats.compressible_bytes / stats.bytes <= 0.6
    sizes = sorted(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    small = [s for s in sizes if s <= 64 * KIB]
    large = [s for s in sizes if s > 64 * KIB]
    assert len(small) >= 40
    assert 1 <= len(large) <= 2
    if size >= 10 * MIB:
        assert all(s >= MIB for s in large)
    depth = max(len(p.relative_to(root).parts) for p in root.rglob("*"))
    assert depth >= 4


def test_text_compresses_and_random_does_not(tmp_path: Path) -> None:
    root = tmp_path / "client"
    seed_client(root, "table-bay-fisheries", 4 * MIB)
    text = (root / "exports/ledger 2025.csv").read_bytes()
    assert text.startswith(b"id,date,invoice,")
    ratio = len(text) / len(zlib.compress(text, 6))
    assert 3 < ratio < 20  # like a real export: well compressible, not trivially so
    binary = next(p for p in root.rglob("*.pdf") if p.stat().st_size > 4 * KIB).read_bytes()
    assert len(zlib.compress(binary, 6)) > 0.99 * len(binary)


def test_content_generation_is_fast() -> None:
    """~200 MB must seed in a few seconds: generating 40 MiB takes ~0.1 s (CPU only;
    the disk, shared with whatever else runs, is not ours to time here)."""
    content = seed._Content(random.Random(1), "acme-mining")
    started = time.perf_counter()
    total = 0
    for _ in range(10):
        total += len(content.text(2 * MIB, "log")) + len(content.text(MIB, "csv"))
        total += len(content.binary(MIB))
    elapsed = time.perf_counter() - started
    assert total == 40 * MIB
    # A generous bound: it catches a per-byte Python loop (tens of seconds), not noise.
    assert elapsed < 10, f"40 MiB took {elapsed:.2f} s"


def test_tree_bytes_rounds_each_file_up_to_whole_blocks_and_skips_links(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 4097)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y")
    (tmp_path / "empty").touch()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert tree_bytes(tmp_path) == 4098
    assert tree_bytes(tmp_path, block=4096) == 3 * 4096
    with pytest.raises(ValueError, match="at least 1 byte"):
        tree_bytes(tmp_path, block=0)
