"""The atomic SFTP writer: an exclusively created temporary sibling, pipelined
writes whose every status is checked, then a posix-rename into place."""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

from paramiko.sftp import (
    CMD_CLOSE,
    CMD_FSETSTAT,
    CMD_OPEN,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_WRITE,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes
from paramiko.sftp_client import SFTPError

from ppo_dr.transport.base import CommitOnExit, temp_path_for
from ppo_dr.transport.ssh.wire import Replies, wire_path

if TYPE_CHECKING:
    from ppo_dr.transport.ssh.remote import SshRemote

log = logging.getLogger(__name__)

WRITE_REQUESTS_IN_FLIGHT = 64  # unanswered writes before we wait for the oldest
_WRITE_HEADER = 4 + 1 + 4 + 4 + 8 + 4  # length, type, id, handle length, offset, data length
_CHANNEL_SLACK = 64  # paramiko keeps each channel packet 64 bytes under the peer's maximum


class SshAtomicWriter(CommitOnExit):
    """Writes to an exclusively created temporary sibling; commit renames it into place.

    Pipelined on paramiko's request layer: the permission change and every write are
    sent without waiting, and every status reply is checked before the handle is
    closed and the file renamed, so a short write or a full disk fails the commit.
    Requests are cut to fill whole SSH packets (see :func:`_write_piece`) whatever
    sizes the caller writes. A small file costs three round trips: open, the rest
    (chmod, data, close), rename.
    """

    def __init__(self, remote: SshRemote, final_path: str, mode: int) -> None:
        self._remote = remote
        self.final_path = final_path
        self.temp_path = temp_path_for(final_path)
        self._written = 0
        self._offset = 0
        self._replies = Replies()
        self._inflight: deque[int] = deque()
        self._pending = bytearray()
        sftp = remote._sftp
        with remote._op("create", self.temp_path):
            # O_CREAT|O_EXCL: never reuse or follow whatever sits at that name.
            flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL
            _t, msg = sftp._request(CMD_OPEN, wire_path(self.temp_path), flags, SFTPAttributes())
            self._handle: bytes = msg.get_binary()
            attrs = SFTPAttributes()
            attrs.st_mode = mode  # exact bits, whatever the server's umask
            self._inflight.append(
                sftp._async_request(self._replies, CMD_FSETSTAT, self._handle, attrs)
            )
        self._piece_size = write_piece(remote, self._handle)

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        self._written += size
        if self._pending:  # top up the partial request first
            take = min(self._piece_size - len(self._pending), size)
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) == self._piece_size:
                self._send(self._pending)
                self._pending = bytearray()
        whole = len(view) - len(view) % self._piece_size
        if whole:
            self._send(view[:whole])  # no copy: paramiko frames straight from the view
        self._pending += view[whole:]
        return size

    def _send(self, data: bytes | bytearray | memoryview) -> None:
        sftp = self._remote._sftp
        with self._remote._op("write", self.temp_path):
            for start in range(0, len(data), self._piece_size):
                piece = data[start : start + self._piece_size]
                self._inflight.append(
                    sftp._async_request(
                        self._replies, CMD_WRITE, self._handle, int64(self._offset), piece
                    )
                )
                self._offset += len(piece)
                while len(self._inflight) > WRITE_REQUESTS_IN_FLIGHT:
                    self._check(self._inflight.popleft())

    def _check(self, num: int) -> None:
        """Wait for one reply and raise if it is not an OK status (caller holds the lock)."""
        t, msg = self._remote._wait(self._replies, num)
        if t != CMD_STATUS:
            raise SFTPError("expected a status reply")
        self._remote._sftp._convert_status(msg)

    def _finish(self) -> None:
        """Send the rest, check every reply, close, then rename over the final name."""
        if self._pending:
            self._send(self._pending)
            self._pending = bytearray()
        sftp = self._remote._sftp
        with self._remote._op("write", self.temp_path):
            self._inflight.append(sftp._async_request(self._replies, CMD_CLOSE, self._handle))
            while self._inflight:
                self._check(self._inflight.popleft())
        self._handle = b""
        self._remote.rename_into_place(self.temp_path, self.final_path)

    def _discard(self) -> None:
        """Close the handle and remove the temporary file, if the connection stands."""
        if not self._remote.alive():
            return  # a later run sweeps the temp file (is_temp_name)
        try:
            with self._remote._lock:
                sftp = self._remote._sftp
                if self._handle:
                    sftp._async_request(self._replies, CMD_CLOSE, self._handle)
                sftp.remove(wire_path(self.temp_path))
        except Exception:
            log.debug("could not remove %s on %s", self.temp_path, self._remote.label)


def write_piece(remote: SshRemote, handle: bytes) -> int:
    """The largest write payload whose request exactly fills whole SSH packets.

    The server takes channel packets of ``out_max_packet_size`` (32 KiB for sshd);
    paramiko sends at most that minus 64 per packet. A 32 KiB payload plus the SFTP
    header spills a 29-byte second packet: sizing requests to whole packets halves
    the packet count.
    """
    packet = remote._sftp.get_channel().out_max_packet_size - _CHANNEL_SLACK
    header = _WRITE_HEADER + len(handle)
    packets = max(1, (remote.write_size + header) // packet)
    return max(1024, min(remote.write_size, packets * packet - header))
