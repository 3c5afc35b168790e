"""paramiko, socket and SFTP failures translated into the ppo-dr error tree, in one place."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import paramiko
from paramiko.sftp_client import SFTPError

from ppo_dr.errors import (
    AuthError,
    DRError,
    HostKeyError,
    PermanentError,
    RemotePathError,
    TransientError,
)
from ppo_dr.transport.base import PATH_ERRNOS

# errno values that mean "the network or the peer went away": worth a retry.
NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
        errno.EHOSTDOWN,
        errno.EPIPE,
        errno.ENOTCONN,
        errno.ESHUTDOWN,
    }
)


def translate_error(
    exc: BaseException, where: str, what: str, *, alive: bool = True
) -> DRError | None:
    """The ppo-dr error for a paramiko/socket/SFTP failure, or None if it is a bug.

    *where* names the server (``user@host:port``), *what* the operation and path;
    *alive* says whether the SSH connection still stands (a bare ``OSError`` from a
    dead connection is a network failure, from a live one a refusal by the server).
    Order matters: the most specific classes come first, because paramiko's auth
    and host key errors are also ``SSHException`` and its SFTP errors are ``OSError``.
    Messages carry no key material and no file contents.
    """
    if isinstance(exc, DRError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(
            f"{where}: host key changed — possible man-in-the-middle; refusing to connect"
        )
    if isinstance(exc, paramiko.PasswordRequiredException):
        return AuthError(f"{where}: {what}: the client key is encrypted and has no passphrase")
    if isinstance(exc, paramiko.AuthenticationException):
        return AuthError(f"{where}: {what}: the server refused our key ({type(exc).__name__})")
    if isinstance(exc, paramiko.ssh_exception.IncompatiblePeer):
        return PermanentError(f"{where}: {what}: no common SSH algorithms ({exc})")
    if isinstance(exc, socket.timeout | TimeoutError):
        return TransientError(f"{where}: {what}: timed out")
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return TransientError(f"{where}: {what}: connection refused or host unreachable")
    if isinstance(exc, socket.gaierror):
        if exc.errno == socket.EAI_AGAIN:
            return TransientError(f"{where}: {what}: name resolution failed for now ({exc})")
        return PermanentError(f"{where}: {what}: cannot resolve host name ({exc})")
    if isinstance(exc, ConnectionError | EOFError):
        return TransientError(f"{where}: {what}: connection lost ({type(exc).__name__})")
    if not alive:
        return TransientError(f"{where}: {what}: connection lost ({type(exc).__name__}: {exc})")
    if isinstance(exc, OSError):
        if exc.errno in NETWORK_ERRNOS:
            return TransientError(f"{where}: {what}: network error ({exc.strerror})")
        if exc.errno == errno.ENOENT:
            return RemotePathError(f"{where}: {what}: no such file or directory")
        if exc.errno in PATH_ERRNOS:
            reason = exc.strerror or os.strerror(exc.errno or 0)
            return RemotePathError(f"{where}: {what}: {reason.lower()}")
        if exc.errno is None:
            # SFTP's catch-all "Failure" (exists, not empty, disk full, ...) on a live
            # connection: the server refused this operation, and will again.
            return RemotePathError(f"{where}: {what}: refused by the server ({exc})")
        return TransientError(f"{where}: {what}: {exc.strerror or exc}")
    if isinstance(exc, paramiko.SSHException | SFTPError):
        return TransientError(f"{where}: {what}: SSH failure ({exc})")
    return None


@contextmanager
def error_boundary(
    where: str, what: str, alive: Callable[[], bool], retire: Callable[[], None]
) -> Iterator[None]:
    """Translate everything raised inside into the error tree; retire the connection
    on a transient failure (its SFTP state may be out of step with the server)."""
    try:
        yield
    except DRError:
        raise  # ours, already precise; the connection itself is fine
    except Exception as exc:
        err = translate_error(exc, where, what, alive=alive())
        if err is None:
            raise
        if isinstance(err, TransientError):
            retire()
        # A host key exception's text carries whole public keys: do not chain it.
        raise err from (None if isinstance(exc, paramiko.BadHostKeyException) else exc)
