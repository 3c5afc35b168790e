"""Restoring into a server over SSH: tar streams into a staging directory, then a switch.

A restore over SFTP pays round trips per file; here every worker sends its share of
the files as one tar stream to ``tar -x`` on the server (:mod:`ppo_dr.mirror.tar_stream`),
piped into OpenSSH's ``ssh`` client when it is installed
(:mod:`ppo_dr.transport.openssh_client`), else over the paramiko connection.
What the restore promises is kept:

- **verified**: every blob is re-hashed as it is read from a mirror
  (:class:`~ppo_dr.mirror.restore_sources.BlobFetcher`); a file no mirror serves
  intact is refused and removed from the staging directory;
- **traversal-proof**: the manifest is checked before anything is sent
  (:func:`~ppo_dr.mirror.manifest.check_restorable`), member names are the checked
  relative paths, and the receiver extracts under the staging directory only;
- **atomic**: everything lands in ``.ppo-restore-<name>-<snapshot>`` beside the
  destination; only a complete, unrefused restore is renamed onto the destination
  (an existing non-empty destination is moved aside first, never deleted);
- **resumable**: a staging directory left by an interrupted run is kept, and a file
  in it whose size and mtime already match the manifest is not sent again (``tar -x``
  sets the mtime only after the content is written); within a run, the files of a
  worker whose stream was cut are checked the same way before they are sent again.

Order: the files (in parallel streams), then the symlinks, then every directory
deepest first, the client's top directory (``.``) last, so each directory's mtime is
set after its contents.
"""

from __future__ import annotations

import logging
import posixpath
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence

from ppo_dr.errors import RemotePathError
from ppo_dr.mirror.manifest import Entry, Manifest
from ppo_dr.mirror.repository import CDC_MAX
from ppo_dr.mirror.restore_sources import BlobFetcher, OpenSource, Tally
from ppo_dr.mirror.tar_stream import (
    END_OF_ARCHIVE,
    aligned_hole,
    batched,
    chunk_regions,
    dense_header,
    extract_command,
    file_member,
    metadata_member,
    padding_for,
    sparse_header,
)
from ppo_dr.transport.base import EntryType, Remote
from ppo_dr.transport.openssh_client import exec_fed, stream_endpoint
from ppo_dr.transport.ssh import SshRemote

log = logging.getLogger(__name__)

STAGING_MARKER = ".ppo-restore-"
ASIDE_MARKER = ".ppo-replaced-"
BUFFERED_FILE_BYTES = 64 * 1024 * 1024  # files up to this are fetched whole (holes found)
STREAM_MIN_TIMEOUT_S = 600.0
STREAM_MIN_RATE = 2_000_000  # bytes/s: a stream slower than this is treated as hung
ZEROS_SHRINK = 64  # zstd stores 2 MiB of zeros in ~100 bytes; text and code in 3-10x less
EXIT_NOT_FOUND = 127  # no tar on the server (or the lab refused the command)


class ReceiverMissing(RemotePathError):
    """The destination cannot run the tar receiver: restore over SFTP instead."""


def staging_path(dest_path: str, snapshot_id: str) -> str:
    """The staging directory of a restore of *snapshot_id* onto *dest_path*: a sibling,
    so the switch is a rename within one filesystem."""
    parent, name = posixpath.split(dest_path.rstrip("/"))
    return posixpath.join(parent, f"{STAGING_MARKER}{name}-{snapshot_id}")


def can_stream_to(dest: Remote) -> bool:
    """True if *dest* is reached over SSH (where a tar receiver beats SFTP)."""
    return isinstance(dest, SshRemote)


def files_already_restored(dest: Remote, staging: str, files: list[Entry]) -> set[str]:
    """Paths of *files* an earlier, interrupted run already completed in *staging*."""
    if dest.stat(staging) is None:
        return set()
    wanted = {e.path: e for e in files}
    done: set[str] = set()
    for st in dest.walk(staging):
        entry = wanted.get(st.path)
        if (
            entry is not None
            and st.type is EntryType.FILE
            and (st.size, st.mtime) == (entry.size, entry.mtime)
        ):
            done.add(entry.path)
    return done


def _timeout(nbytes: int) -> float:
    return max(STREAM_MIN_TIMEOUT_S, nbytes / STREAM_MIN_RATE)


def send_stream(dest: Remote, staging: str, pieces: Iterator[bytes], nbytes: int) -> None:
    """Run the tar receiver under *staging* on *dest*, fed *pieces* then the archive end:
    through OpenSSH's ``ssh`` client when it is installed (C encryption in a process of
    its own), else over *dest*'s paramiko connection."""
    if not isinstance(dest, SshRemote):
        raise ReceiverMissing(f"{dest.label}: a tar receiver needs an SSH destination")

    def archive() -> Iterator[bytes]:
        yield from pieces
        yield END_OF_ARCHIVE

    command, timeout = extract_command(staging), _timeout(nbytes)
    endpoint = stream_endpoint(dest.endpoint)
    if endpoint is not None:  # it gathers the pieces itself (writev, no copy)
        result = exec_fed(endpoint, command, timeout, archive())
    else:
        result = dest.exec(command, timeout, stdin=batched(archive()))
    if result.exit_status == EXIT_NOT_FOUND:
        raise ReceiverMissing(f"{dest.label}: cannot run tar: {result.stderr[:300]!r}")
    if not result.ok:
        raise RemotePathError(
            f"{dest.label}: tar -x under {staging!r} exited {result.exit_status}: "
            f"{result.stderr[:500].decode(errors='replace')}"
        )


def _fetch_all(fetch: Callable[[str], bytes | None], blob_ids: Sequence[str]) -> list[bytes] | None:
    """The blobs *blob_ids*, or None as soon as one cannot be fetched intact."""
    pieces = []
    for blob_id in blob_ids:
        data = fetch(blob_id)
        if data is None:
            return None
        pieces.append(data)
    return pieces


class ZeroChunks:
    """Finds the holes of a big file from its chunk ids alone, without reading them.

    A long run of zeros (a sparse file's hole, preallocated space) is cut into
    chunks of the chunker's maximum size, all with one id, and zeros compress to
    almost nothing. A chunk of that size, whose id repeats in the file, or stored
    :data:`ZEROS_SHRINK` times smaller than it is, is compared with the id of as many
    zero bytes (hashed once per length), so a file streamed as it is read (over
    :data:`BUFFERED_FILE_BYTES`) still lands sparse, and its holes cost no read.
    """

    def __init__(self, opened: list[OpenSource]) -> None:
        self._opened = opened
        self._zero_ids: dict[int, str] = {}

    def _zero_id(self, length: int) -> str:
        zero_id = self._zero_ids.get(length)
        if zero_id is None:
            zero_id = self._zero_ids[length] = self._opened[0].repo.codec.blob_id(bytes(length))
        return zero_id

    def plan(self, entry: Entry) -> tuple[list[int], list[bool]] | None:
        """(each chunk's length, whether it is all zeros), or None if *entry* has no
        such chunk (or a chunk no source indexes: then it is streamed dense)."""
        lengths, holes = [], []
        repeated = {blob_id for blob_id, n in Counter(entry.chunks).items() if n > 1}
        for blob_id in entry.chunks:
            loc = next((s.index.blobs[blob_id] for s in self._opened if blob_id in s.index), None)
            if loc is None:
                return None
            n = loc.raw_length
            lengths.append(n)
            maybe = blob_id in repeated or n == CDC_MAX or loc.length * ZEROS_SHRINK <= n
            holes.append(maybe and blob_id == self._zero_id(n))
        if not any(holes) or sum(lengths) != entry.size:
            return None
        return lengths, holes


def streamed_member(
    entry: Entry,
    fetch: Callable[[str], bytes | None],
    plan: tuple[list[int], list[bool]] | None,
) -> Generator[bytes, None, bool]:
    """A big file's member, each chunk sent as it is fetched (sparse per *plan*, from
    :meth:`ZeroChunks.plan`); returns False if a chunk could not be fetched intact,
    after padding the member with zeros (its header is already sent)."""
    lengths, holes = plan if plan is not None else ([], [])
    if plan is None:
        stored = entry.size
        yield dense_header(entry, stored)
    else:
        regions = chunk_regions(lengths, holes)
        stored = sum(n for _, n in regions)
        yield sparse_header(entry, regions, entry.size)
    sent = offset = 0
    for i, blob_id in enumerate(entry.chunks):
        if holes and holes[i]:  # zeros: sent only outside the aligned hole, never read
            end = offset + lengths[i]
            gap = aligned_hole(offset, end) or (end, end)
            zeros = (gap[0] - offset) + (end - gap[1])
            offset = end
            sent += zeros
            yield bytes(zeros)
            continue
        data = fetch(blob_id)
        if data is None or sent + len(data) > stored or (lengths and len(data) != lengths[i]):
            break
        offset += len(data)
        sent += len(data)
        yield data
    if sent != stored:
        yield bytes(stored - sent)
        return False
    yield padding_for(stored)
    return True


def _file_members(
    opened: list[OpenSource], files: list[Entry], tally: Tally, refused: list[str]
) -> Iterator[bytes]:
    """The members of *files*, each from blobs verified on the way; a file no source
    serves intact is refused (a big one, whose header is already sent, is padded
    with zeros and removed after the stream)."""
    uses = Counter(blob_id for entry in files for blob_id in entry.chunks)
    fetcher = BlobFetcher(opened, tally.served, tally.lock, uses)

    def refuse(entry: Entry) -> None:
        with tally.lock:
            tally.refused.append(entry.path)
            if fetcher.last_miss_damaged:
                tally.damaged.append(entry.path)

    fetch = fetcher.fetch
    zeros = ZeroChunks(opened)
    for entry in files:
        if entry.size <= BUFFERED_FILE_BYTES:
            pieces = _fetch_all(fetch, entry.chunks)
            if pieces is None or sum(map(len, pieces)) != entry.size:
                refuse(entry)
                continue
            yield from file_member(entry, pieces, entry.size)
        elif not (yield from streamed_member(entry, fetch, zeros.plan(entry))):
            refuse(entry)
            refused.append(entry.path)
            continue
        with tally.lock:
            tally.files += 1
            tally.bytes += entry.size


def stream_files(
    opened: list[OpenSource],
    files: list[Entry],
    dest: Remote,
    staging: str,
    threads: int,
    tally: Tally,
) -> None:
    """Write *files* under *staging* on *dest* as one tar stream (*threads* is unused:
    one stream per worker process is what scales; the signature is the thread path's)."""
    written: list[str] = []
    send_stream(
        dest, staging, _file_members(opened, files, tally, written), sum(e.size for e in files)
    )
    for path in written:  # padded, refused files: never leave them looking complete
        dest.remove(posixpath.join(staging, path))


def hard_links_of(manifest: Manifest) -> dict[str, str]:
    """Hard link path -> the file it links to, for links to a plain file of the
    manifest (anything else is restored as a copy: it keeps its chunks)."""
    plain = {e.path for e in manifest.entries if e.type is EntryType.FILE and e.link is None}
    return {
        e.path: e.link
        for e in manifest.entries
        if e.type is EntryType.FILE and e.link is not None and e.link in plain
    }


def finish_tree(dest: Remote, staging: str, manifest: Manifest) -> None:
    """The hard links and symlinks, then (a stream of their own) every directory
    deepest first and the top directory last.

    Two streams, because ``tar -x`` creates a symlink whose target holds ``..`` only
    at the very end of its run (a placeholder stands in before), after it has set
    the directories' mtimes: the link would change its directory's mtime again.
    """
    entries = manifest.entries
    links = [e for e in entries if e.type is EntryType.SYMLINK]
    dirs = sorted(
        (e for e in entries if e.type is EntryType.DIR),
        key=lambda e: e.path.count("/"),
        reverse=True,
    )
    hard = hard_links_of(manifest)
    by_path = {e.path: e for e in entries}
    if links or hard:
        members = [metadata_member(by_path[path], to) for path, to in hard.items()]
        members += [metadata_member(e) for e in links]
        send_stream(dest, staging, iter(members), 0)
    tops = [] if manifest.top is None else [manifest.top]  # "." : the client's top
    send_stream(dest, staging, (metadata_member(e) for e in [*dirs, *tops]), 0)
    if manifest.top is None:  # a manifest written before tops were recorded: as before
        dest.chmod(staging, 0o755)


def switch_into_place(dest: Remote, staging: str, dest_path: str, snapshot_id: str) -> str | None:
    """Rename the complete *staging* onto *dest_path*; returns where an existing
    non-empty destination was moved aside (None if there was none)."""
    aside = None
    existing = dest.stat(dest_path)
    if existing is not None:
        if existing.type is EntryType.DIR and not dest.listdir(dest_path):
            dest.rmdir(dest_path)
        else:
            parent, name = posixpath.split(dest_path.rstrip("/"))
            aside = posixpath.join(parent, f"{ASIDE_MARKER}{name}-{snapshot_id}")
            n = 0
            while dest.stat(aside + (f".{n}" if n else "")) is not None:
                n += 1
            aside += f".{n}" if n else ""
            log.warning("restore: moving the existing %s aside to %s", dest_path, aside)
            dest.rename(dest_path, aside)
    dest.rename(staging, dest_path)
    return aside
