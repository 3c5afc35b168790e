"""A local copy of each repository's index files, as the mirror stores them.

Why: every run loads the whole index of each mirror it writes to (which blob sits in
which pack): one index file per earlier run, each read costing round trips to the
mirror. Over the chaos suite's slow link (300 ms round trip) a repository some runs
old took minutes to load, and on a fast link loading both mirrors' indexes was about
15 % of an incremental run (docs/repository.md). The listing of ``index/`` is still
read every time; only the files are kept.

Why it is safe: an index file is named by the SHA-256 of its stored bytes and never
changes, so a copy is used only while it still hashes to its name (a damaged copy is
dropped and read again). The bytes are kept as stored (sealed when the repository is
encrypted), so the cache shows nothing the mirror does not. Copies of files the
mirror no longer lists (a prune merged them) are dropped at the next load.

Beside the files, the index they make together is kept parsed (``.merged-index``,
``ppo_dr.mirror.index.IndexColumns``), so a run parses only the files that are new.

``verify`` never reads through it: it checks what the mirror holds. Like restic's cache
(``~/.cache/restic``), it is per machine: under ``$PPO_DR_HOME/cache/index``, or
``$PPO_DR_INDEX_CACHE`` (a directory, or ``off``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from ppo_dr import config

#: ``PPO_DR_INDEX_CACHE``: the cache's directory, or this to keep no cache.
OFF: Final = "off"
#: The parsed, merged index of a repository (``ppo_dr.mirror.index``), beside its
#: index files; a dot name, which no index file has and :meth:`keep_only` keeps.
MERGED_NAME: Final = ".merged-index"

#: When this machine last checked the whole repository without a problem (seconds
#: since the epoch, as text; ``ppo_dr.mirror.runbook.verify_new_snapshots``).
WHOLE_CHECK_NAME: Final = ".whole-check"

_log = logging.getLogger(__name__)


class IndexCache:
    """Index files by repository (a key naming it: mirror and path) and name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def default(cls) -> IndexCache | None:
        """The machine's cache (module docstring), None when it is turned off."""
        chosen = os.environ.get("PPO_DR_INDEX_CACHE", "").strip()
        if chosen.lower() == OFF:
            return None
        return cls(Path(chosen) if chosen else config.home() / "cache" / "index")

    @staticmethod
    def repo_key(mirror_id: str, path: str) -> str:
        """A directory name for one repository (ids and paths never reach the disk)."""
        return hashlib.sha256(f"{mirror_id}\0{path}".encode()).hexdigest()[:32]

    def _file(self, repo: str, name: str) -> Path | None:
        """Where *name* is kept, or None for a name that is not a plain file name."""
        if not name or "/" in name or name.startswith(".") or "\0" in name:
            return None
        return self.root / repo / name

    def get(self, repo: str, name: str, digest: str) -> bytes | None:
        """The kept copy of *name* if it still hashes to *digest*, else None."""
        path = self._file(repo, name)
        if path is None:
            return None
        try:
            stored = path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(stored).hexdigest() != digest:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return stored

    def put(self, repo: str, name: str, stored: bytes) -> None:
        """Keep *stored* as *name*; a failure only costs reading it again next time."""
        path = self._file(repo, name)
        if path is not None:
            _keep(path, stored)

    def get_merged(self, repo: str) -> bytes | None:
        """The merged cache file of *repo* (``ppo_dr.mirror.index``) as stored, or None;
        the caller checks it (digest, seal) and ignores it when it does not check."""
        try:
            return (self.root / repo / MERGED_NAME).read_bytes()
        except OSError:
            return None

    def put_merged(self, repo: str, stored: bytes) -> None:
        """Keep *repo*'s merged cache file (atomically; a failure costs a rebuild)."""
        _keep(self.root / repo / MERGED_NAME, stored)

    def whole_check_at(self, repo: str) -> float | None:
        """When *repo* was last checked whole from this machine (None: never, or unknown)."""
        try:
            return float((self.root / repo / WHOLE_CHECK_NAME).read_text(encoding="ascii"))
        except (OSError, ValueError):
            return None

    def note_whole_check(self, repo: str, when: float) -> None:
        """Record a whole check of *repo* that found nothing (a failure to write costs
        checking it whole again next run)."""
        _keep(self.root / repo / WHOLE_CHECK_NAME, f"{when:.3f}".encode("ascii"))

    def drop_merged(self, repo: str) -> None:
        with contextlib.suppress(OSError):
            (self.root / repo / MERGED_NAME).unlink()

    def keep_only(self, repo: str, names: Iterable[str]) -> None:
        """Drop the copies of *repo*'s files other than *names* (the mirror's listing)."""
        listed = set(names)
        folder = self.root / repo
        try:
            kept = [p for p in folder.iterdir() if p.name not in listed]
        except OSError:
            return
        for path in kept:
            if not path.name.startswith("."):  # another process's file being written
                with contextlib.suppress(OSError):
                    path.unlink()


def _keep(path: Path, stored: bytes) -> None:
    """Write *path* atomically (a dot-named temporary file, then rename); a failure
    is only logged: it costs reading the mirror again next time."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp.write_bytes(stored)
        temp.replace(path)
    except OSError as exc:
        _log.debug("index cache: %s not kept (%s)", path.name, exc)
        with contextlib.suppress(OSError):
            temp.unlink()
