"""Checks of a restored client, read-only (so always safe to repeat): the copy, the app.

=================  =====================================================================
check              what it does
=================  =====================================================================
verify_restored    every restored entry re-read on the target over SFTP and compared with
                   the manifest: type, size, mode, mtime, and the content chunk by chunk
                   against the chunk ids; the first mismatch is named (:class:`VerifyMismatch`)
app_health         ``/c/<client>/health`` on the target, then through the front door
                   (the client's public URL) with ``X-PPO-Server`` = the target
=================  =====================================================================

Used by the failover (:mod:`ppo_dr.failover.steps`) and the DR drill.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ppo_dr.errors import (
    PermanentError,
    TransientError,
)
from ppo_dr.failover.model import ClientMove
from ppo_dr.failover.steps import source_targets
from ppo_dr.fleet_access import FleetAccess, client_path
from ppo_dr.ids import check_id
from ppo_dr.mirror.manifest import Manifest, check_snapshot_id
from ppo_dr.transport.base import EntryType

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S: Final = 30.0  # how long app_health keeps asking before it gives up
HEALTH_REQUEST_TIMEOUT_S: Final = 3.0
HEALTH_POLL_S: Final = 0.25
SERVER_HEADER: Final = "X-PPO-Server"
_READ_BLOCK: Final = 1 << 20


class VerifyMismatch(PermanentError):
    """A restored file differs from its snapshot (names the file and what differs)."""

    def __init__(self, client_id: str, server_id: str, path: str, why: str) -> None:
        self.path = path
        super().__init__(f"restored {client_id} on {server_id}: {path!r} {why}")


# --------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class Verified:
    """What verify_restored compared: entries, files and bytes re-read."""

    client_id: str
    server_id: str
    snapshot_id: str
    entries: int
    files: int
    bytes: int

    def evidence(self) -> dict[str, Any]:
        """What the ledger and the run record of this check (JSON)."""
        return {"entries": self.entries, "files": self.files, "bytes": self.bytes}


def _load_snapshot(
    access: FleetAccess, move: ClientMove, snapshot_id: str, mirrors: Sequence[str] | None
) -> tuple[Manifest, dict[str, int], Callable[[bytes], str]]:
    """The manifest, each chunk's plaintext length, and the blob-id function."""
    from ppo_dr.mirror.restore_sources import load_manifest, open_sources

    opened = open_sources(source_targets(access, move, mirrors), access.mirror_key)
    manifest = load_manifest(opened, move.client_id, snapshot_id)
    lengths: dict[str, int] = {}
    for source in opened:
        for blob_id, loc in source.index.blobs.items():
            lengths.setdefault(blob_id, loc.raw_length)
    return manifest, lengths, opened[0].repo.codec.blob_id


def verify_restored(
    access: FleetAccess,
    move: ClientMove,
    snapshot_id: str,
    *,
    mirrors: Sequence[str] | None = None,
) -> Verified:
    """Re-read the restored client on its target and compare it with the manifest.

    Type, size, permission bits and mtime of every entry; each file's content read
    back chunk by chunk (the lengths from the repository index) and hashed to the
    chunk ids the manifest lists; symlink targets; and nothing on the target that the
    snapshot lacks. :class:`VerifyMismatch` names the first difference.
    """
    client = check_id(move.client_id, "client id")
    sid = check_snapshot_id(snapshot_id)
    manifest, lengths, blob_id = _load_snapshot(access, move, sid, mirrors)
    dest = access.remote(move.to_server)
    root = client_path(access.fleet, client, server_id=move.to_server)

    def mismatch(path: str, why: str) -> VerifyMismatch:
        return VerifyMismatch(client, move.to_server, path, why)

    if dest.stat(root) is None:
        raise mismatch(".", "is missing: nothing restored at " + root)
    files = total = 0
    expected = {e.path for e in manifest.entries}
    for entry in manifest.entries:
        full = posixpath.join(root, entry.path)
        st = dest.stat(full)
        if st is None:
            raise mismatch(entry.path, "is missing")
        if entry.type is EntryType.OTHER:
            continue
        if st.type is not entry.type:
            raise mismatch(
                entry.path, f"is a {st.type.value}, the snapshot has a {entry.type.value}"
            )
        if entry.type is EntryType.SYMLINK:
            if dest.readlink(full) != (entry.target or ""):
                raise mismatch(entry.path, "points elsewhere than in the snapshot")
            continue
        if st.mode != entry.mode:
            raise mismatch(entry.path, f"has mode {st.mode:04o}, the snapshot {entry.mode:04o}")
        if st.mtime != entry.mtime:
            raise mismatch(entry.path, f"has mtime {st.mtime}, the snapshot {entry.mtime}")
        if entry.type is not EntryType.FILE:
            continue
        if st.size != entry.size:
            raise mismatch(entry.path, f"has {st.size} bytes, the snapshot {entry.size}")
        offset = 0
        with dest.open_read(full) as reader:
            for chunk in entry.chunks:
                length = lengths.get(chunk)
                if length is None:
                    raise PermanentError(
                        f"snapshot {client}/{sid}: chunk {chunk} of {entry.path!r} is in no index"
                    )
                data = _read_exact(reader, length)
                if len(data) != length or blob_id(data) != chunk:
                    raise mismatch(entry.path, f"differs from the snapshot at byte {offset}")
                offset += length
            if reader.read(1):
                raise mismatch(entry.path, f"is longer than the snapshot ({offset} bytes)")
        files += 1
        total += entry.size
    for st in dest.walk(root):
        if st.path not in expected:
            raise mismatch(st.path, "is not in the snapshot")
    return Verified(client, move.to_server, sid, len(manifest.entries), files, total)


def _read_exact(reader: Any, n: int) -> bytes:
    parts: list[bytes] = []
    left = n
    while left > 0:
        data = reader.read(min(left, _READ_BLOCK))
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


# --------------------------------------------------------------------------- health


@dataclass(frozen=True)
class Health:
    """A healthy answer: which URL, which server answered, after how long."""

    url: str
    server: str
    seconds: float
    attempts: int

    def evidence(self) -> dict[str, Any]:
        """What the ledger and the run record of this answer (JSON)."""
        return {"url": self.url, "server": self.server, "seconds": round(self.seconds, 3)}


def health_url(fleet: Fleet, client_id: str, server_id: str | None = None) -> str:
    """The client's health URL: on *server_id* directly, or (None) through the front door."""
    client = fleet.client(check_id(client_id, "client id"))
    if server_id is None:
        base = str(client.url)
        return urllib.parse.urljoin(base if base.endswith("/") else base + "/", "health")
    server = fleet.server(check_id(server_id, "server id"))
    if server.http is None:
        raise PermanentError(f"server {server.id} serves no HTTP: it cannot host {client.id}")
    return f"http://{server.http.host}:{server.http.port}/c/{client.id}/health"


def _get(url: str, timeout: float) -> tuple[int, str, dict[str, Any]]:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise PermanentError(f"health URL {url!r} refused: only http and https are fetched")
    request = urllib.request.Request(url, headers={"User-Agent": "ppo-dr-failover"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, headers, body = response.status, response.headers, response.read(65536)
    except urllib.error.HTTPError as exc:
        status, headers, body = exc.code, exc.headers, exc.read(65536)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    return status, str(headers.get(SERVER_HEADER) or ""), doc if isinstance(doc, dict) else {}


def app_health(
    fleet: Fleet,
    client_id: str,
    server_id: str,
    *,
    front_door: bool = False,
    timeout: float = HEALTH_TIMEOUT_S,
) -> Health:
    """Wait until *client_id* is healthy on *server_id* (200, not frozen, answered by it).

    Directly at the server, or (*front_door*) at the client's public URL, where
    ``X-PPO-Server`` must name *server_id*: the route was switched, not just the data
    put in place. Asks again until *timeout* (the front door caches placements
    briefly); TransientError with the last answer if it never became healthy.
    """
    url = health_url(fleet, client_id, None if front_door else server_id)
    started = time.monotonic()
    attempts = 0
    last = "no answer"
    while True:
        attempts += 1
        try:
            status, answered_by, doc = _get(url, HEALTH_REQUEST_TIMEOUT_S)
            if status != 200:
                last = f"HTTP {status} {doc.get('error', '')}".strip()
            elif answered_by != server_id:
                last = f"answered by {answered_by or 'an unnamed server'}, not {server_id}"
            elif doc.get("frozen"):
                last = "the client is still frozen there"
            else:
                return Health(url, answered_by, time.monotonic() - started, attempts)
        except (OSError, urllib.error.URLError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() - started >= timeout:
            raise TransientError(
                f"{client_id} not healthy on {server_id} at {url} after {timeout:.0f} s: {last}"
            )
        time.sleep(HEALTH_POLL_S)


__all__ = ["Health", "Verified", "VerifyMismatch", "app_health", "health_url", "verify_restored"]
