"""Reaching the fleet's servers over SSH, with the host keys fleet.yaml pins.

Nothing here trusts the machine it runs on: the only host keys accepted are the
``servers[].ssh.host_key`` entries of the fleet file, written into a private
known_hosts file under the state directory (``<home>/fleet-access/<fleet>/``), named
by the hash of its content so concurrent runs never see a half-written one and a
changed fleet gets a new file. ``~/.ssh`` is never read and nothing is auto-accepted:
a server offering another key fails with :class:`~ppo_dr.errors.HostKeyError`
(permanent, never retried) before our key is offered.

The operator's private key comes from ``access.key_file`` or, for ``access.key_secret``
with ``env``, from that environment variable (copied to a 0600 file in the same
private directory, because paramiko loads keys from files). A ``block`` secret is a
Prefect object; the task layer resolves it and hands the text in (``key_text``).

:class:`FleetAccess` holds one :class:`~ppo_dr.transport.SshPool` for a fleet:
``remote(server_id)`` returns a live pooled connection, and ``connector(server_id)`` a
picklable factory for a NEW connection with the same pinned host keys and key
(:func:`connect_ssh`), which the mirror hands to its upload and restore processes.
A mirror declared as an S3 bucket (``servers[].s3``) gets an S3Remote instead, and an
:class:`S3Connector` (credentials resolved from their references, never shown).
Also here, pure: where each client lives now (:func:`homes`: the store's placements,
which win over fleet.yaml's initial homes) and where its repositories are on its
mirrors (:func:`mirror_plan`). What to snapshot and the connected mirror targets are
the mirror's (:mod:`ppo_dr.mirror.fleet_targets`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import posixpath
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from ppo_dr import config
from ppo_dr.closing import ClosesOnExit
from ppo_dr.errors import AuthError, PermanentError
from ppo_dr.ids import check_id
from ppo_dr.local_files import replace_with
from ppo_dr.placement import mirrors_for
from ppo_dr.secret_refs import REDACTOR, SecretResolver, resolve_secret

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet, Server, SshEndpoint
    from ppo_dr.transport import Remote
    from ppo_dr.transport.ssh import SshPool

DEFAULT_PORT = 22
CONNECT_TIMEOUT_S = 10.0
IO_TIMEOUT_S = 60.0
REPOS_DIR = "repos"


# --------------------------------------------------------------------------- pure look-ups


def known_server(fleet: Fleet, server_id: str) -> Server:
    """The server *server_id* (validated id); PermanentError if the fleet has none."""
    sid = check_id(server_id, "server id")
    try:
        return fleet.server(sid)
    except KeyError:
        raise PermanentError(f"no server {sid!r} in fleet {fleet.name}") from None


def app_server(fleet: Fleet, server_id: str) -> Server:
    """The app server *server_id* (validated id); PermanentError if unknown or not an app."""
    server = known_server(fleet, server_id)
    if server.role != "app":
        raise PermanentError(f"server {server.id!r} is {server.role!r}, not an app server")
    return server


def homes(fleet: Fleet, placements: Mapping[str, str] | None = None) -> dict[str, str]:
    """client -> the server it lives on now: the store's *placements* where they name a
    client of the fleet, else fleet.yaml's initial ``clients[].server``.

    The store is the truth once a client has moved (failover, migration); fleet.yaml
    only says where a client started. Placements of clients the fleet no longer lists
    are ignored.
    """
    found = {c.id: c.server for c in fleet.clients}
    for client, server in (placements or {}).items():
        if client in found:
            found[client] = check_id(server, "server id")
    return found


class IdleSpareError(PermanentError):
    """A spare no client is placed on: not a home (yet), so nothing to mirror. The
    distributed topology's scheduled mirror of a spare meets this until a failover
    moves clients onto it, and ends quietly; asked for by hand, it is refused."""


def home_server(
    fleet: Fleet, server_id: str, placements: Mapping[str, str] | None = None
) -> Server:
    """The server *server_id* as a home of clients (something to mirror).

    An app server always qualifies; a spare only while the placements put clients on
    it (a spare turned home by a failover). A mirror never does. PermanentError
    otherwise, naming the role.
    """
    server = known_server(fleet, server_id)
    if server.role == "app":
        return server
    if server.role == "spare" and server.id in homes(fleet, placements).values():
        return server
    if server.role == "spare":
        raise IdleSpareError(
            f"server {server.id!r} is 'spare', not an app server (and no client is placed on it)"
        )
    raise PermanentError(f"server {server.id!r} is {server.role!r}, not an app server")


def client_ids_on(
    fleet: Fleet,
    server_id: str,
    wanted: Iterable[str] | None = None,
    placements: Mapping[str, str] | None = None,
) -> list[str]:
    """The clients living on *server_id* (per *placements*, else fleet.yaml), or those of
    *wanted* (each validated and checked to live there), in fleet order."""
    home = home_server(fleet, server_id, placements)
    where = homes(fleet, placements)
    on_server = [c.id for c in fleet.clients if where[c.id] == home.id]
    if wanted is None:
        return on_server
    chosen = {check_id(c, "client id") for c in wanted}
    strangers = sorted(chosen - set(on_server))
    if strangers:
        raise PermanentError(
            f"client(s) {', '.join(strangers)} not on server {home.id} "
            f"(its clients: {', '.join(on_server) or 'none'})"
        )
    return [c for c in on_server if c in chosen]


def client_path(
    fleet: Fleet,
    client_id: str,
    placements: Mapping[str, str] | None = None,
    *,
    server_id: str | None = None,
) -> str:
    """Absolute directory of *client_id*'s data: ``<data_root>/<data_path>`` of
    *server_id* if given, else of the server it lives on now (*placements*)."""
    client = fleet.client(check_id(client_id, "client id"))
    if server_id is None:
        server_id = homes(fleet, placements)[client.id]
    return posixpath.join(known_server(fleet, server_id).data_root, client.data_path)


def repo_path(mirror: Server, app_server_id: str) -> str:
    """``<mirror.data_root>/repos/<app-server-id>``: one repository per app server; on
    an S3 mirror ``/repos/<app-server-id>`` below the bucket's prefix."""
    root = "/" if mirror.s3 is not None else mirror.data_root
    return posixpath.join(root, REPOS_DIR, check_id(app_server_id, "server id"))


def mirror_ids_of(
    fleet: Fleet, server_id: str, placements: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The mirrors of home server *server_id*, on-site first: the ones fleet.yaml
    declares, else the pair :func:`ppo_dr.placement.mirrors_for` derives (the same
    rule the failover planner uses), within the countries every client living there
    allows."""
    home = home_server(fleet, server_id, placements)
    if home.mirrors:
        declared = [fleet.server(m) for m in home.mirrors]
        onsite = [m.id for m in declared if m.dc == home.dc]
        return (*onsite, *(m.id for m in declared if m.dc != home.dc))
    where = homes(fleet, placements)
    allowed: set[str] | None = None
    for client in fleet.clients:
        if where[client.id] == home.id:
            allowed = set(client.countries) if allowed is None else allowed & set(client.countries)
    countries = None if allowed is None else sorted(allowed)
    return tuple(mirrors_for(fleet, home.id, countries=countries))


def mirror_plan(
    fleet: Fleet, app_server_id: str, placements: Mapping[str, str] | None = None
) -> list[tuple[Server, str]]:
    """(mirror, repository path) for every mirror of *app_server_id*: on-site first."""
    home = home_server(fleet, app_server_id, placements)
    return [
        (m, repo_path(m, home.id))
        for m in map(fleet.server, mirror_ids_of(fleet, home.id, placements))
    ]


def known_hosts_line(host: str, port: int, host_key: str) -> str:
    """One known_hosts line for a pinned key (``[host]:port type base64``)."""
    name = host if port == DEFAULT_PORT else f"[{host}]:{port}"
    key_type, key_b64 = host_key.split()[:2]
    return f"{name} {key_type} {key_b64}"


def known_hosts_text(fleet: Fleet) -> str:
    """known_hosts content for every server of *fleet*, from its pinned keys only."""
    return "".join(
        known_hosts_line(s.ssh.host, s.ssh.port, s.ssh.host_key) + "\n"
        for s in fleet.servers
        if s.ssh is not None  # S3 mirrors have no host key
    )


# --------------------------------------------------------------------------- files


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _write_once(directory: Path, stem: str, data: bytes, mode: int) -> Path:
    """``<directory>/<stem>-<sha256[:16]>``, written atomically if it is not there yet."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    final = directory / f"{stem}-{digest}"
    if final.exists() and final.read_bytes() == data:
        return final
    replace_with(final, directory / f".{stem}.{secrets.token_hex(6)}.tmp", data, mode=mode)
    return final


def write_known_hosts(fleet: Fleet, directory: Path) -> Path:
    """The fleet's pinned host keys as a known_hosts file in *directory*; its path."""
    return _write_once(
        _private_dir(directory), "known_hosts", known_hosts_text(fleet).encode("ascii"), 0o600
    )


def operator_key_file(fleet: Fleet, directory: Path, key_text: str | None = None) -> Path:
    """The operator's private key file: *key_text* if given, else from ``fleet.access``.

    Raises AuthError (permanent) when the fleet names no key, the file is missing, or
    the secret it names is not set. The key's content is never put in a message.
    """
    access = fleet.access
    if key_text is None and access.key_secret is not None:
        ref = access.key_secret
        if ref.env is None:
            raise AuthError(
                f"access.key_secret {ref.describe()} is a Prefect Secret block: it is "
                "resolved by the flows; on the command line set access.key_file or an env secret"
            )
        key_text = os.environ.get(ref.env)
        if not key_text:
            raise AuthError(f"access.key_secret names ${ref.env}, which is not set")
    if key_text is not None:
        data = key_text.encode("utf-8")
        if not data.endswith(b"\n"):
            data += b"\n"
        return _write_once(_private_dir(directory), "operator_key", data, 0o600)
    if access.key_file is None:
        raise AuthError("fleet.yaml names no operator key: set access.key_file or key_secret")
    path = Path(access.key_file)
    if not path.is_file():
        raise AuthError(f"access.key_file {path} does not exist or is not a file")
    return path


# --------------------------------------------------------------------------- connections


def connect_ssh(
    host: str,
    port: int,
    user: str,
    key_file: str,
    known_hosts: str,
    timeout: float = CONNECT_TIMEOUT_S,
    io_timeout: float = IO_TIMEOUT_S,
) -> Remote:
    """A new SSH connection, host key checked against *known_hosts* only.

    Module-level (so a ``functools.partial`` of it pickles by reference): another
    process calls it to open its own connection. Paramiko loads in that process.
    """
    from ppo_dr.transport.ssh import SshRemote

    return SshRemote.connect(
        host, port, user, key_file, known_hosts, timeout=timeout, io_timeout=io_timeout
    )


@dataclass(frozen=True)
class S3Connector:
    """A picklable factory of :class:`~ppo_dr.transport.s3.S3Remote` for one S3 mirror
    (``MirrorTarget.connect``: upload and restore processes build their own client).
    The credentials are resolved already and never shown: ``repr`` omits them and
    SecretStr masks them anywhere else."""

    bucket: str
    prefix: str
    region: str
    endpoint_url: str | None = None
    access_key_id: SecretStr | None = field(default=None, repr=False)
    secret_access_key: SecretStr | None = field(default=None, repr=False)
    timeout: float = CONNECT_TIMEOUT_S
    io_timeout: float = IO_TIMEOUT_S

    def __call__(self) -> Remote:
        from ppo_dr.transport.s3 import S3Remote

        key_id, secret = _plain(self.access_key_id), _plain(self.secret_access_key)
        for value in (key_id, secret):  # also in a worker process: its own redactor
            if value:
                REDACTOR.protect(value)
        remote = S3Remote(
            self.bucket,
            prefix=self.prefix,
            region=self.region,
            endpoint_url=self.endpoint_url,
            access_key_id=key_id,
            secret_access_key=secret,
            connect_timeout=self.timeout,
            read_timeout=self.io_timeout,
        )
        REDACTOR.install()  # botocore's loggers exist now; it logs the key id at DEBUG
        return remote


def _plain(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def parse_repository_key(text: str, where: str) -> bytes:
    """32 key bytes from 64 hex digits or base64; the error names *where*, never the value."""
    value = text.strip()
    try:
        key = bytes.fromhex(value) if len(value) == 64 else base64.b64decode(value, validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise PermanentError(
            f"mirror encryption key from {where} is not 32 bytes as 64 hex digits or base64"
        )
    return key


class FleetAccess(ClosesOnExit):
    """Pooled SSH connections to a fleet's servers, host keys pinned by the fleet file.

    Thread-safe (the pool is). Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        state_dir: Path | None = None,
        key_text: str | None = None,
        secret_resolver: SecretResolver | None = None,
        timeout: float = CONNECT_TIMEOUT_S,
        io_timeout: float = IO_TIMEOUT_S,
    ) -> None:
        from ppo_dr.transport.ssh import SshPool

        self.fleet = fleet
        directory = (state_dir or config.home()) / "fleet-access" / check_id(fleet.name, "fleet")
        self.known_hosts = write_known_hosts(fleet, directory)
        self.key_file = operator_key_file(fleet, directory, key_text)
        self.timeout = timeout
        self.io_timeout = io_timeout
        self.pool: SshPool = SshPool(
            self.key_file, self.known_hosts, timeout=timeout, io_timeout=io_timeout
        )
        self._secret_resolver = secret_resolver
        self._mirror_key: bytes | None = None
        self._s3: dict[str, Remote] = {}  # server id -> S3Remote (boto3 clients pool)
        self._s3_lock = threading.Lock()

    @property
    def mirror_key(self) -> bytes | None:
        """The repositories' at-rest key named by ``fleet.mirror.encryption_key``.

        Resolved on first use (environment, or a Secret block through the resolver the
        task layer passes) and kept in memory only; None when the fleet names none.
        """
        ref = self.fleet.mirror.encryption_key
        if ref is None:
            return None
        if self._mirror_key is None:
            secret = resolve_secret(ref, self._secret_resolver)
            self._mirror_key = parse_repository_key(secret.get_secret_value(), ref.describe())
        return self._mirror_key

    def server(self, server_id: str) -> Server:
        """The server *server_id* (validated); PermanentError if the fleet has none."""
        return known_server(self.fleet, server_id)

    def remote(self, server_id: str) -> Remote:
        """A live connection to *server_id* (pooled; reconnects after a transient error);
        for an S3 mirror its bucket, one client per mirror for this object's life."""
        server = self.server(server_id)
        if server.s3 is not None:
            with self._s3_lock:
                if server.id not in self._s3:
                    self._s3[server.id] = self.s3_connector(server.id)()
                return self._s3[server.id]
        ssh = self._ssh(server)
        return self.pool.get(ssh.host, ssh.port, ssh.user)

    def _ssh(self, server: Server) -> SshEndpoint:
        if server.ssh is None:
            raise PermanentError(f"server {server.id!r} has no ssh endpoint in fleet.yaml")
        return server.ssh

    def s3_connector(self, server_id: str) -> S3Connector:
        """The factory of S3 mirror *server_id*'s remote, credentials resolved from
        their references (environment, or Secret blocks through the resolver)."""
        server = self.server(server_id)
        loc = server.s3
        if loc is None:
            raise PermanentError(f"server {server.id!r} is not an S3 mirror")
        keys = [
            None if ref is None else resolve_secret(ref, self._secret_resolver)
            for ref in (loc.access_key_id, loc.secret_access_key)
        ]
        return S3Connector(
            loc.bucket,
            loc.prefix,
            loc.region,
            loc.endpoint_url,
            keys[0],
            keys[1],
            timeout=self.timeout,
            io_timeout=self.io_timeout,
        )

    def connector(self, server_id: str) -> Callable[[], Remote]:
        """A picklable factory opening a NEW connection to *server_id* (not pooled)
        with this fleet's pinned known_hosts and operator key (for an S3 mirror, its
        bucket and credentials): for another process."""
        server = self.server(server_id)
        if server.s3 is not None:
            return self.s3_connector(server.id)
        ssh = self._ssh(server)
        return functools.partial(
            connect_ssh,
            ssh.host,
            ssh.port,
            ssh.user,
            str(self.key_file),
            str(self.known_hosts),
            timeout=self.timeout,
            io_timeout=self.io_timeout,
        )

    def close(self) -> None:
        """Close every pooled connection (and S3 client)."""
        self.pool.close_all()
        with self._s3_lock:
            remotes, self._s3 = list(self._s3.values()), {}
        for remote in remotes:
            remote.close()
