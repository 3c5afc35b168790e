"""Uploading packs from a separate process with its own connection to the mirror.

PERF-NOTES: paramiko spends most of its time in Python (framing, the GIL) around the
cipher, so two uploads on threads of one process barely beat one; two processes with
one connection each doubled throughput. When a :class:`MirrorTarget` carries a
picklable ``connect`` factory, its packs go to a child process: the reader sends each
filled pack (its blobs, unframed) down a pipe, the child finishes it (trailer, sha256
name), writes pack and index file, and answers with the bytes written or the error.
The parent keeps the order "pack and index stored, then manifest" by waiting for
every answer before it writes a manifest.

The child is started from a ``forkserver`` (a clean single-threaded process), not
forked from the caller, which may be running paramiko, Prefect and lock threads.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from ppo_dr.mirror.repository import PackBuilder, Repository
from ppo_dr.transport.base import Remote

_CONTEXT: Any = None


def process_context() -> Any:
    """The multiprocessing context for upload and restore workers: a forkserver that
    has the mirror and paramiko imported already (so a worker starts in milliseconds)."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(
            ["ppo_dr.mirror.uploader", "ppo_dr.mirror.restore", "ppo_dr.transport.ssh"]
        )
        _CONTEXT = ctx
    return _CONTEXT


def _serve(
    conn: Connection,
    connect: Callable[[], Remote],
    repo_path: str,
    mirror_id: str,
    key: bytes | None,
) -> None:
    """Child: open the repository on a fresh connection, then store packs until told
    to stop. Answers ("ok", (bytes written, pack id, pack size, index file name)) or
    ("error", text) to each pack."""
    remote: Remote | None = None
    failure: str | None = None
    try:
        remote = connect()
        repo = Repository.open(remote, repo_path, mirror_id, key)
    except Exception as exc:
        failure = f"{type(exc).__name__}: {exc}"
    try:
        while True:
            builder = conn.recv()
            if builder is None:
                return
            if failure is not None:
                conn.send(("error", failure))
                continue
            try:
                pack = builder.finish(repo.codec)
                sent = repo.write_pack(pack)
                name, size = repo.write_index([pack])
                conn.send(("ok", (sent + size, pack.pack_id, pack.size, name)))
            except Exception as exc:
                failure = f"{type(exc).__name__}: {exc}"
                conn.send(("error", failure))
    except (EOFError, OSError):
        return  # the parent went away
    finally:
        if remote is not None:
            remote.close()


class UploadProcess:
    """The parent's handle on one uploader child."""

    def __init__(
        self, connect: Callable[[], Remote], repo_path: str, mirror_id: str, key: bytes | None
    ) -> None:
        ctx = process_context()
        self._conn, child_end = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve,
            args=(child_end, connect, repo_path, mirror_id, key),
            name=f"ppo-dr-upload-{mirror_id}",
            daemon=True,
        )
        self._proc.start()
        child_end.close()

    def upload(self, builder: PackBuilder) -> tuple[int, str, int, str]:
        """Store one pack (and its index file) through the child: bytes written, the
        pack's id and size, and the index file's name."""
        self._conn.send(builder)
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(value)
        sent, pack_id, size, name = value
        return int(sent), str(pack_id), int(size), str(name)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()
