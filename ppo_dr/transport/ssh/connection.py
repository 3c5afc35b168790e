"""Opening one SSH connection with its SFTP session: TCP options, algorithm order,
host key check against our known_hosts only, public key auth, SFTP request sizes."""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

import paramiko
from paramiko.sftp import CMD_EXTENDED
from paramiko.sftp_client import SFTPError

from ppo_dr.errors import AuthError, HostKeyError, TransientError
from ppo_dr.transport.dial import dial
from ppo_dr.transport.ssh.translate import error_boundary
from ppo_dr.transport.ssh.wire import DEFAULT_REQUEST, SFTP_MAX_PACKET, SFTP_WINDOW

log = logging.getLogger(__name__)

DEFAULT_PORT = 22
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def open_session(
    host: str,
    port: int,
    user: str,
    key_file: str | os.PathLike[str],
    known_hosts: str | os.PathLike[str],
    *,
    timeout: float,
    io_timeout: float,
    keepalive: int,
) -> tuple[paramiko.Transport, paramiko.SFTPClient, int, int]:
    """Connect, verify the host key, authenticate, open SFTP: (transport, sftp, read
    size, write size). On any failure the socket is closed before the error leaves."""
    where = f"{user}@{host}:{port}"
    known = _load_known_keys(Path(known_hosts), host, port)
    pkey = _load_client_key(Path(key_file), where)
    sock: socket.socket | None = None
    transport: paramiko.Transport | None = None
    try:
        # No SFTP session yet, so no OSError here can be a path refusal: alive=False.
        with error_boundary(where, "connect", lambda: False, lambda: None):
            sock = dial(host, port, timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            transport = paramiko.Transport(sock)
            _prefer_algorithms(transport, known)
            transport.banner_timeout = timeout
            transport.handshake_timeout = timeout
            transport.auth_timeout = timeout
            _negotiate(transport, timeout)
            _check_host_key(transport.get_remote_server_key(), known, where, Path(known_hosts))
            transport.auth_publickey(user, pkey)
            if not transport.is_authenticated():
                raise AuthError(f"{where}: the server wants more than our key")
            transport.set_keepalive(keepalive)
            sftp = paramiko.SFTPClient.from_transport(
                transport, window_size=SFTP_WINDOW, max_packet_size=SFTP_MAX_PACKET
            )
            if sftp is None:
                raise TransientError(f"{where}: could not open the SFTP subsystem")
            sftp.get_channel().settimeout(io_timeout)
            read_size, write_size = sftp_limits(sftp)
    except BaseException:
        if transport is not None:
            transport.close()
        elif sock is not None:
            sock.close()
        raise
    log.debug("connected to %s (cipher %s)", where, transport.remote_cipher)
    return transport, sftp, read_size, write_size


def _known_host_name(host: str, port: int) -> str:
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


def _fingerprint(key: paramiko.PKey) -> str:
    return str(key.fingerprint)  # "SHA256:..." as OpenSSH prints it; a hash, not the key


def _load_known_keys(known_hosts: Path, host: str, port: int) -> dict[str, paramiko.PKey]:
    """The keys *known_hosts* lists for host:port (by key type); nothing else is read."""
    try:
        host_keys = paramiko.HostKeys(str(known_hosts))
    except OSError as exc:
        raise HostKeyError(
            f"cannot read known_hosts file {known_hosts}: {exc.strerror or exc}"
        ) from exc
    entry = host_keys.lookup(_known_host_name(host, port))
    return dict(entry) if entry else {}


def _load_client_key(key_file: Path, where: str) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(key_file)
    except paramiko.PasswordRequiredException as exc:
        raise AuthError(
            f"{where}: client key {key_file} is encrypted; no passphrase given"
        ) from exc
    except OSError as exc:
        raise AuthError(f"{where}: cannot read client key {key_file}: {exc.strerror}") from exc
    except Exception as exc:  # cryptography/paramiko parse errors: name the type only
        raise AuthError(
            f"{where}: cannot load client key {key_file} ({type(exc).__name__})"
        ) from None


def _check_host_key(
    offered: paramiko.PKey, known: dict[str, paramiko.PKey], where: str, known_hosts: Path
) -> None:
    """Raise HostKeyError unless *offered* is exactly a key known_hosts has for us."""
    if not known:
        raise HostKeyError(
            f"{where}: host key unknown — {known_hosts} has no entry for this host/port; "
            f"it offered {offered.get_name()} {_fingerprint(offered)}: verify it out of "
            "band and add it to known_hosts (keys are never accepted automatically)"
        )
    expected = known.get(offered.get_name())
    if expected is None or expected.asbytes() != offered.asbytes():
        pinned = next(iter(known.values())) if expected is None else expected
        raise HostKeyError(
            f"{where}: host key changed — possible man-in-the-middle! It offered "
            f"{offered.get_name()} {_fingerprint(offered)}, which does not match "
            f"{known_hosts} ({pinned.get_name()} {_fingerprint(pinned)}); refusing to "
            "connect (our key was not offered)",
            offered=_fingerprint(offered),
            pinned=_fingerprint(pinned),
        )


def _prefer_algorithms(transport: paramiko.Transport, known: dict[str, paramiko.PKey]) -> None:
    """GCM first (one pass per byte, AES-NI); the host key types we know first, so a
    server with several keys shows us the one we can check (as OpenSSH does)."""
    opts = transport.get_security_options()
    ciphers = [c for c in PREFERRED_CIPHERS if c in opts.ciphers]
    opts.ciphers = tuple(ciphers + [c for c in opts.ciphers if c not in ciphers])
    known_types = [k for k in opts.key_types if k in known]
    if known_types:
        opts.key_types = tuple(known_types + [k for k in opts.key_types if k not in known_types])


def sftp_limits(sftp: paramiko.SFTPClient) -> tuple[int, int]:
    """(read, write) request sizes the server accepts; 32 KiB if it does not say.

    Asks OpenSSH's limits@openssh.com; a server without it answers with an error
    status, which is fine: the SFTP v3 guarantee of 32 KiB is then what we use.
    """
    try:
        _t, msg = sftp._request(CMD_EXTENDED, "limits@openssh.com")
        _max_packet, max_read, max_write = (msg.get_int64() for _ in range(3))
    except (OSError, EOFError, SFTPError):
        return DEFAULT_REQUEST, DEFAULT_REQUEST
    cap = SFTP_MAX_PACKET - 1024
    read = min(max_read, cap) if max_read else DEFAULT_REQUEST
    write = min(max_write, cap) if max_write else DEFAULT_REQUEST
    return max(read, DEFAULT_REQUEST), max(write, DEFAULT_REQUEST)


def _negotiate(transport: paramiko.Transport, timeout: float) -> None:
    """Key exchange with a real deadline (paramiko's start_client just stops waiting)."""
    done = threading.Event()
    transport.start_client(event=done)
    if not done.wait(timeout):
        raise TransientError(f"SSH key exchange did not finish within {timeout:g} s")
    if not transport.is_active():
        exc = transport.get_exception()
        raise exc if exc is not None else paramiko.SSHException("key exchange failed")
