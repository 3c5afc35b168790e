"""Seeded client data: a realistic, deterministic tree of files per client.

Each client gets about its share of the lab's size as

* many small files (1-64 KiB, skewed small) in nested directories,
* one or two large files (a few MiB with the default lab: an export and a media file),
* half the bytes compressible (log lines, CSV rows) and half incompressible (random),
* names with spaces and non-ASCII characters (``Résumé 2026.txt``, ``données/``,
  ``日本語.md``), an empty directory, a relative symlink inside the tree,
* ``journal/journal.log``, empty, that the workload appends to.

The same ``seed`` and client id always give the same tree, byte for byte. Random
content comes from :class:`random.Random` (``randbytes``) and text from a small pool of
lines per client joined in random order, so ~200 MB take well under three seconds and
no two files share their content (a content-addressed mirror cannot cheat).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from ppo_dr.errors import LabError

KIB = 1024
MIB = 1024 * KIB

SMALL_MIN = 1 * KIB
SMALL_MAX = 64 * KIB
JOURNAL = "journal/journal.log"
EMPTY_DIR = "uploads/pending"
SYMLINK = "latest-report.csv"
SYMLINK_TARGET = "reports/2026/Quarterly Report Q1.csv"

# Directories every client has; small files are spread over them.
DIRECTORIES: tuple[str, ...] = (
    "documents/contracts/2025",
    "documents/hr/onboarding",
    "documents/policies",
    "invoices/2025/Q4",
    "invoices/2026/Q1",
    "reports/2026",
    "photos/site visits/2025-11",
    "données/archives",
    "données/clients",
    "logs/app",
    "logs/nginx",
    "mail/attachments",
    "projects/Project Ümlaut/specs",
    "projects/Project Ümlaut/drawings",
    "exports",
    "media",
    "backups",
)

_TEXT_NAMES = ("notes", "minutes", "export", "summary", "übersicht", "rapport", "メモ", "todo list")
_BINARY_NAMES = ("scan", "photo", "reçu", "archive", "写真", "attachment", "signed copy")
_TEXT_EXTS = (".log", ".csv", ".txt", ".md")
_BINARY_EXTS = (".pdf", ".jpg", ".png", ".zip", ".bin")


@dataclass
class SeedStats:
    """What was written for one client."""

    client: str
    files: int = 0
    bytes: int = 0
    compressible_bytes: int = 0
    incompressible_bytes: int = 0
    directories: set[str] = field(default_factory=set)


class _Content:
    """Content generators for one client, all driven by one seeded RNG.

    A text line is three fragments (time and level / request / outcome), each picked
    from a pool of 256 by one random byte: 16 million distinct lines from 768
    formatted fragments, so text compresses like real logs (several times, not
    twenty) and is generated at the speed of ``bytes.join``.
    """

    def __init__(self, rng: random.Random, client_id: str) -> None:
        self.rng = rng
        r = rng
        self.log_parts = (
            [
                f"2026-03-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:"
                f"{r.randint(0, 59):02d}.{r.randint(0, 999):03d}Z "
                f"{r.choice(('INFO ', 'INFO ', 'INFO ', 'DEBUG', 'WARN ', 'ERROR'))} ".encode()
                for _ in range(256)
            ],
            [
                f"app.{res} {r.choice(('GET', 'GET', 'POST', 'PUT', 'DELETE'))} "
                f"/api/v1/{res}/{r.randint(1, 99999)} ".encode()
                for res in (
                    r.choice(("orders", "invoices", "customers", "reports", "sessions", "files"))
                    for _ in range(256)
                )
            ],
            [
                (
                    f"{r.choice((200, 200, 200, 201, 204, 304, 400, 404, 500))} "
                    f"{r.randint(1, 2500)}ms client={client_id} user=u{r.randint(1, 5000):05d}\n"
                ).encode()
                for _ in range(256)
            ],
        )
        code = client_id.upper()
        self.csv_parts = (
            [
                (
                    f"{n},2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d},{code}-INV-{n:07d},"
                ).encode()
                for n in (r.randint(1, 9_999_999) for _ in range(256))
            ],
            [
                f"{r.choice(('Widget A', 'Widget B', 'Service hour', 'Licence', 'Support plan'))},"
                f"{r.randint(1, 40)},".encode()
                for _ in range(256)
            ],
            [
                f"{r.randint(100, 999_999) / 100:.2f},ZAR,"
                f"{r.choice(('paid', 'open', 'overdue'))}\n".encode()
                for _ in range(256)
            ],
        )

    def _lines(self, parts: tuple[list[bytes], list[bytes], list[bytes]], count: int) -> bytes:
        a, b, c = parts
        picks = self.rng.randbytes(3 * count)
        return b"".join(
            chain.from_iterable(
                zip(
                    map(a.__getitem__, picks[0::3]),
                    map(b.__getitem__, picks[1::3]),
                    map(c.__getitem__, picks[2::3]),
                    strict=True,
                )
            )
        )

    def text(self, size: int, kind: str = "log") -> bytes:
        """*size* bytes of log lines or CSV rows (a CSV starts with its header)."""
        if size <= 0:
            return b""
        parts = self.csv_parts if kind == "csv" else self.log_parts
        head = (
            b"id,date,invoice,product,quantity,amount,currency,status\n" if kind == "csv" else b""
        )
        lines = size // 60 + 2
        body = head + self._lines(parts, lines)
        while len(body) < size:
            body += self._lines(parts, lines)
        return body[: size - 1] + b"\n"

    def binary(self, size: int) -> bytes:
        return self.rng.randbytes(size) if size > 0 else b""


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _small_size(rng: random.Random, remaining: int) -> int:
    size = int(2 ** rng.uniform(10, 16))  # log-uniform 1 KiB .. 64 KiB: mostly small
    return max(1, min(size, SMALL_MAX, remaining))


def seed_client(directory: Path, client_id: str, size_bytes: int, *, seed: int = 1) -> SeedStats:
    """Write the client's tree into *directory* (created), about *size_bytes* in all."""
    if size_bytes < 0:
        raise LabError(f"client data size must not be negative (got {size_bytes})")
    rng = random.Random(f"ppo-lab/{seed}/{client_id}")
    content = _Content(rng, client_id)
    stats = SeedStats(client_id)

    def put(relative: str, data: bytes, compressible: bool) -> None:
        path = directory / relative
        if str(path.parent) not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(str(path.parent))
        _write(path, data)
        stats.files += 1
        stats.bytes += len(data)
        if compressible:
            stats.compressible_bytes += len(data)
        else:
            stats.incompressible_bytes += len(data)

    made: set[str] = set()
    directory.mkdir(parents=True, exist_ok=True)
    for relative in (*DIRECTORIES, "journal", EMPTY_DIR):
        (directory / relative).mkdir(parents=True, exist_ok=True)
        made.add(str(directory / relative))
    stats.directories = {*DIRECTORIES, "journal", EMPTY_DIR}
    (directory / JOURNAL).touch()

    budget = size_bytes
    small = max(SMALL_MIN, min(8 * KIB, budget // 64 or 1))

    # Named files every client has: the awkward names runbooks must carry intact.
    put("Résumé 2026.txt", content.text(small, "log"), True)
    put("données/clients à jour.csv", content.text(small, "csv"), True)
    put(
        "日本語.md",
        "# 日本語のメモ\n\nこれは試験用のファイルです。\n\n".encode() + content.text(small, "log"),
        True,
    )
    put(SYMLINK_TARGET, content.text(small, "csv"), True)
    (directory / SYMLINK).symlink_to(os.path.relpath(directory / SYMLINK_TARGET, directory))

    # One or two large files: an export (compressible) and a media file (random).
    remaining = budget - stats.bytes
    if budget >= 4 * MIB:
        large = [("exports/ledger 2025.csv", True), ("media/site walkthrough.mp4", False)]
    else:
        large = [rng.choice([("exports/ledger 2025.csv", True), ("backups/db dump.bin", False)])]
    for relative, compressible in large:
        size = min(int(budget * rng.uniform(0.18, 0.28)), 8 * MIB, max(remaining, 0))
        data = content.text(size, "csv") if compressible else content.binary(size)
        put(relative, data, compressible)
        remaining = budget - stats.bytes

    # Small files until the budget is spent, keeping the two kinds of bytes level.
    number = 0
    while budget - stats.bytes > 0:
        size = _small_size(rng, budget - stats.bytes)
        lagging = stats.compressible_bytes <= stats.incompressible_bytes
        compressible = lagging if rng.random() < 0.85 else not lagging
        folder = rng.choice(DIRECTORIES)
        number += 1
        if compressible:
            name = f"{rng.choice(_TEXT_NAMES)} {number:04d}{rng.choice(_TEXT_EXTS)}"
            kind = "csv" if name.endswith(".csv") else "log"
            put(f"{folder}/{name}", content.text(size, kind), True)
        else:
            name = f"{rng.choice(_BINARY_NAMES)} {number:04d}{rng.choice(_BINARY_EXTS)}"
            put(f"{folder}/{name}", content.binary(size), False)
    return stats


def seed_clients(
    data_root: Path, clients: Iterable[tuple[str, str]], size_bytes: int, *, seed: int = 1
) -> list[SeedStats]:
    """Seed each (client id, data path) under *data_root*, *size_bytes* per client."""
    return [
        seed_client(data_root / data_path, client_id, size_bytes, seed=seed)
        for client_id, data_path in clients
    ]


def tree_bytes(directory: Path, block: int = 1) -> int:
    """Total size of the regular files under *directory* (symlinks not followed).

    With *block* > 1 each file is rounded up to whole blocks: what the files take on
    a file system that allocates in blocks of that size (a tmpfs, in pages).
    """
    if block < 1:
        raise ValueError(f"block must be at least 1 byte, not {block}")
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                total += -(-path.stat().st_size // block) * block
    return total
