"""One object read as a stream, and one written whole: spooled locally, then a single
PUT or a multipart upload, so no half object ever appears."""

from __future__ import annotations

import contextlib
import tempfile
from typing import IO, TYPE_CHECKING, Any

from ppo_dr.closing import ClosesOnExit
from ppo_dr.errors import PermanentError
from ppo_dr.transport.base import CommitOnExit

if TYPE_CHECKING:
    from ppo_dr.transport.s3.remote import S3Remote

SPOOL_IN_MEMORY = 16 * 1024 * 1024  # a pack fits in memory; anything larger spills to disk


class S3Reader(ClosesOnExit):
    """An object (or a byte range of one) streamed from a GET; errors translated."""

    def __init__(self, remote: S3Remote, path: str, body: Any) -> None:
        self._remote = remote
        self._path = path
        self._body = body
        self._closed = False

    def read(self, size: int | None = -1) -> bytes:
        if self._body is None:
            return b""
        with self._remote._op("read", self._path):
            data = self._body.read() if size is None or size < 0 else self._body.read(size)
        return bytes(data)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._body is not None:
                with contextlib.suppress(Exception):
                    self._body.close()


class S3AtomicWriter(CommitOnExit):
    """Spools what is written to a local temporary file; commit uploads it in one go.

    The upload is a single PUT below the multipart threshold, else a multipart upload
    (aborted if any part fails, so no half object ever appears). Either way S3 makes the
    object visible whole at the final key; ``temp_path`` is the final key too, since
    nothing is written under another name. With *exclusive* the upload carries
    ``If-None-Match: *`` and fails with RemotePathError if the key already exists.
    """

    def __init__(self, remote: S3Remote, final_path: str, *, exclusive: bool = False) -> None:
        self._remote = remote
        self.final_path = final_path
        self.temp_path = final_path
        self._key = remote._key(final_path)
        self._exclusive = exclusive
        self._size = 0
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=SPOOL_IN_MEMORY, prefix="ppo-s3-"
        )

    def write(self, data: bytes) -> int:
        if self._done:
            raise PermanentError(f"{self._remote.label}: write {self.final_path!r}: closed")
        written = self._spool.write(data)
        self._size += written
        return written

    def _finish(self) -> None:
        """Upload the spooled bytes to the final key (atomic by S3 semantics)."""
        self._spool.seek(0)
        self._remote._upload(
            self._key, self.final_path, self._spool, self._size, exclusive=self._exclusive
        )
        self._spool.close()

    def _discard(self) -> None:
        """Drop the spooled bytes; nothing was sent, the final key is untouched."""
        self._spool.close()
