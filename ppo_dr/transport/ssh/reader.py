"""Pipelined front-to-back reads of one remote file over SFTP."""

from __future__ import annotations

import io
import sys
from collections import deque
from typing import TYPE_CHECKING, Any

from paramiko.sftp import CMD_CLOSE, CMD_DATA, CMD_READ, CMD_STATUS, int64
from paramiko.sftp_client import SFTPError

from ppo_dr.transport.ssh.wire import SFTP_WINDOW, Replies

if TYPE_CHECKING:
    from ppo_dr.transport.ssh.remote import SshRemote

READ_AHEAD_BYTES = SFTP_WINDOW  # read requests in flight per open file


class SshReader(io.RawIOBase):
    """A remote file read front to back; pipelined reads, errors come out translated.

    Requests of ``read_size`` are kept in flight up to READ_AHEAD_BYTES, issued and
    consumed under the connection's lock (paramiko's prefetch thread sends outside
    any lock and could split another thread's multi-packet request). The expected
    size is probed by one request *at* it, so a small file costs one round trip and a
    file that grew since its size was taken is still read to its real end.
    """

    def __init__(
        self,
        remote: SshRemote,
        path: str,
        handle: bytes,
        size: int,
        *,
        start: int = 0,
        limit: int | None = None,
    ) -> None:
        """*start*/*limit*: read only *limit* bytes from offset *start* (a range)."""
        super().__init__()
        self._remote = remote
        self._path = path
        self._handle = handle
        self._replies = Replies()
        self._queue: deque[tuple[int, int, int]] = deque()  # (request, offset, length)
        self._next = start  # next offset to ask for
        self._end = None if limit is None else start + limit  # never ask at or past it
        self._expect: int | None = size  # None once the file proved longer
        self._buffer = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def _top_up(self) -> None:
        step = self._remote.read_size
        depth = max(2, READ_AHEAD_BYTES // step)
        sftp = self._remote._sftp
        while len(self._queue) < depth:
            if self._expect is not None and self._next > self._expect:
                break  # everything up to the expected end, and the probe at it, is asked
            if self._end is not None and self._next >= self._end:
                break  # a range: all of it is asked, and no probe beyond it
            length = step
            if self._expect is not None and self._next < self._expect:
                length = min(step, self._expect - self._next)
            if self._end is not None:
                length = min(length, self._end - self._next)
            num = sftp._async_request(
                self._replies, CMD_READ, self._handle, int64(self._next), length
            )
            self._queue.append((num, self._next, length))
            self._next += length

    def _piece(self) -> bytes:
        """The next bytes of the file, b"" at its end (caller holds the lock)."""
        sftp = self._remote._sftp
        while not self._eof:
            self._top_up()
            if not self._queue:  # a range read to its end
                self._eof = True
                break
            num, offset, length = self._queue.popleft()
            t, msg = self._remote._wait(self._replies, num)
            if t == CMD_STATUS:
                try:
                    sftp._convert_status(msg)
                except EOFError:
                    self._eof = True
                    break
                raise SFTPError("expected data, got an OK status")
            if t != CMD_DATA:
                raise SFTPError("expected data")
            data = msg.get_string()
            if self._expect is not None and offset >= self._expect and data:
                self._expect = None  # the probe found more: the file grew, read on
            if len(data) < length:  # short read: ask for the gap before anything else
                gap = offset + len(data)
                gap_num = sftp._async_request(
                    self._replies, CMD_READ, self._handle, int64(gap), length - len(data)
                )
                self._queue.appendleft((gap_num, gap, length - len(data)))
            if data:
                return bytes(data)
        return b""

    def read(self, size: int | None = -1) -> bytes:
        want = sys.maxsize if size is None or size < 0 else size
        pieces: list[bytes | memoryview] = []
        got = 0
        with self._remote._op("read", self._path):
            while got < want:
                if not self._buffer:
                    piece = self._piece()
                    if not piece:
                        break
                    self._buffer = memoryview(piece)
                take = self._buffer[: want - got]
                self._buffer = self._buffer[len(take) :]
                pieces.append(take)
                got += len(take)
        return b"".join(pieces)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Close the remote handle without waiting for the reply (nothing depends on it)."""
        if not self.closed:
            try:
                if self._remote.alive():
                    with self._remote._op("close", self._path):
                        self._remote._sftp._async_request(self._replies, CMD_CLOSE, self._handle)
            finally:
                super().close()
