"""SSH keys of the lab: a host key per server, the operator's key, and the files that trust them.

All keys are ed25519, written in the OpenSSH private key format (read by OpenSSH,
paramiko and asyncssh alike), mode 0600 in a 0700 directory:

    keys/operator_ed25519(.pub)        the key the runbooks log in with
    keys/<server>_host_ed25519(.pub)   each server's host key
    keys/authorized_keys               the operator's public key: trusted by every server
    known_hosts                        ``[127.0.0.1]:<public ssh port> ssh-ed25519 AAAA...``
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from ppo_dr.errors import LabError
from ppo_dr.local_files import write_atomically

OPERATOR_KEY = "operator_ed25519"
AUTHORIZED_KEYS = "authorized_keys"


def host_key_name(server_id: str) -> str:
    return f"{server_id}_host_ed25519"


def generate_keypair(private_path: Path, comment: str) -> str:
    """Write a new ed25519 key pair at *private_path* (+ ``.pub``); return the public key.

    The returned public key is ``ssh-ed25519 AAAA...`` without comment, the form
    fleet.yaml and known_hosts use.
    """
    private_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    write_atomically(private_path, private, mode=0o600)
    write_atomically(
        private_path.with_name(private_path.name + ".pub"),
        f"{public} {comment}\n".encode(),
        mode=0o600,
    )
    return public


def read_public_key(private_path: Path) -> str:
    """The ``<type> <base64>`` public key stored beside *private_path*."""
    pub = private_path.with_name(private_path.name + ".pub")
    try:
        fields = pub.read_text(encoding="ascii").split()
    except OSError as exc:
        raise LabError(f"cannot read public key {pub}: {exc.strerror}") from exc
    if len(fields) < 2:
        raise LabError(f"{pub} is not an OpenSSH public key")
    return f"{fields[0]} {fields[1]}"


def known_hosts_line(port: int, public_key: str, host: str = "127.0.0.1") -> str:
    """One known_hosts line; non-standard ports are written ``[host]:port``."""
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {public_key}"


def write_known_hosts(
    path: Path, entries: Iterable[tuple[int, str]], host: str = "127.0.0.1"
) -> None:
    """Write known_hosts for (public port, host public key) pairs, atomically."""
    text = "".join(known_hosts_line(port, key, host) + "\n" for port, key in entries)
    write_atomically(path, text.encode("ascii"), mode=0o644)


def add_known_host(path: Path, port: int, public_key: str, host: str = "127.0.0.1") -> None:
    """Add or replace the entry for *port* in known_hosts (rewritten atomically)."""
    line = known_hosts_line(port, public_key, host)
    name = line.split()[0]
    kept: list[str] = []
    if path.exists():
        kept = [
            existing
            for existing in path.read_text(encoding="ascii").splitlines()
            if existing.strip() and existing.split()[0] != name
        ]
    write_atomically(path, ("\n".join([*kept, line]) + "\n").encode("ascii"), mode=0o644)


def remove_known_host(path: Path, port: int, host: str = "127.0.0.1") -> None:
    """Drop the entry for *port* from known_hosts (rewritten atomically)."""
    if not path.exists():
        return
    name = known_hosts_line(port, "x", host).split()[0]
    kept = [
        line
        for line in path.read_text(encoding="ascii").splitlines()
        if line.strip() and line.split()[0] != name
    ]
    write_atomically(path, "".join(line + "\n" for line in kept).encode("ascii"), mode=0o644)


def write_authorized_keys(path: Path, public_keys: Iterable[str]) -> None:
    text = "".join(f"{key} ppo-operator\n" for key in public_keys)
    write_atomically(path, text.encode("ascii"), mode=0o600)


@dataclass(frozen=True)
class LabKeys:
    """Where the lab's keys are and what their public halves are."""

    directory: Path
    operator_public: str
    host_public: Mapping[str, str]

    @property
    def operator_key(self) -> Path:
        return self.directory / OPERATOR_KEY

    @property
    def authorized_keys(self) -> Path:
        return self.directory / AUTHORIZED_KEYS

    def host_key(self, server_id: str) -> Path:
        return self.directory / host_key_name(server_id)


def generate_lab_keys(directory: Path, server_ids: Iterable[str]) -> LabKeys:
    """The operator key, authorized_keys and one host key per server, in *directory*."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    operator = generate_keypair(directory / OPERATOR_KEY, "ppo-operator@lab")
    write_authorized_keys(directory / AUTHORIZED_KEYS, [operator])
    hosts = {
        server_id: generate_keypair(directory / host_key_name(server_id), f"{server_id}@lab")
        for server_id in server_ids
    }
    return LabKeys(directory, operator, hosts)
