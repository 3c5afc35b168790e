"""The state store's database on the lab's network: who may connect, from where, how.

The control plane's PostgreSQL holds two databases, ``prefect`` (the engine's) and
``store`` (ours). In a namespaced lab the store must be reachable from every site:
the workers in each data centre, the front door in the wan, the control site itself,
and the operator on this host. So PostgreSQL listens on the control site's loopback
and on its address on the lab bridge; ``pg_hba.conf`` lets only the ``ppo`` role in,
by password, from loopback and the lab's own ``10.n.0.0/16``; HAProxy forwards a TCP
port on the host's 127.0.0.1 into the control site (nothing else of the lab is routed
to the host). Store URLs name a libpq password file, never the password, so a URL in
fleet.yaml, a log line or ``ps`` shows nothing secret.
"""

from __future__ import annotations

import os
import re
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ppo_dr.errors import LabError

if TYPE_CHECKING:
    from ppo_dr.lab.controlplane_record import ControlPlane

HOST = "127.0.0.1"

#: The operator's password for the lab's ``ppo`` role (else a random one); never shown.
PASSWORD_ENV = "PPO_DR_LAB_PG_PASSWORD"  # noqa: S105 (a variable name)
#: libpq password file beside ``controlplane.json``: store URLs name it, never the password.
PASSFILE = "pgpass"
_PASSWORD = re.compile(r"[A-Za-z0-9_.~-]{16,128}")
_LAB_ADDRESS = re.compile(r"10\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})")


@dataclass(frozen=True)
class StoreUrls:
    """The state store's database as two sides of the lab see it: ``url`` from this
    host (HAProxy's TCP port in a namespaced lab), ``inner_url`` from inside the lab's
    namespaces (PostgreSQL on the control site's address). Neither carries the
    password: libpq reads it from the ``passfile`` they name."""

    url: str
    inner_url: str


def pg_password() -> str:
    """``$PPO_DR_LAB_PG_PASSWORD`` when set (checked, never echoed), else a random one."""
    named = os.environ.get(PASSWORD_ENV)
    if named is None:
        return secrets.token_urlsafe(18)
    if not _PASSWORD.fullmatch(named):
        raise LabError(
            f"${PASSWORD_ENV} must be 16 to 128 characters of A-Z a-z 0-9 _ . ~ - "
            "(its value is not shown)"
        )
    return named


def lab_network(address: str) -> str:
    """The lab's ``10.n.0.0/16`` from one of its addresses (``10.n.200.1``)."""
    match = _LAB_ADDRESS.fullmatch(address)
    if not match or any(int(part) > 255 for part in match.groups()):
        raise LabError(f"{address!r} is not an address of a lab's 10.n.0.0/16")
    return f"10.{int(match[1])}.0.0/16"


def pg_hba(netns_address: str | None) -> str:
    """``pg_hba.conf``: the superuser on the private socket only; the ``ppo`` role by
    password from loopback and (namespaced lab) from the lab's own /16; nobody else.
    PostgreSQL rejects whatever no line matches."""
    lines = [
        "# written by ppo_dr.lab.controlplane; first match wins, no match is rejected",
        "local all postgres trust",
        "host prefect,store ppo 127.0.0.1/32 scram-sha-256",
    ]
    if netns_address is not None:
        lines.append(f"host prefect,store ppo {lab_network(netns_address)} scram-sha-256")
    return "\n".join(lines) + "\n"


def listen_addresses(plane: ControlPlane) -> str:
    """Loopback, and the control site's address in a namespaced lab."""
    return f"{HOST},{plane.netns_address}" if plane.netns_address else HOST


def passfile(plane: ControlPlane) -> Path:
    return Path(plane.directory) / PASSFILE


def write_passfile(plane: ControlPlane) -> Path:
    """The libpq password file (mode 0600, as libpq requires) for the ``ppo`` role."""
    password = (Path(plane.directory) / "pg" / "password").read_text().strip()
    path = passfile(plane)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(f"*:*:*:ppo:{password}\n")
    return path


def store_urls(plane: ControlPlane) -> StoreUrls:
    """Where the store's database is, from this host and from inside the lab."""
    query = f"/store?passfile={urllib.parse.quote(str(passfile(plane)), safe='/')}"
    inner = f"postgresql://ppo@{plane.netns_address or HOST}:{plane.pg_port}{query}"
    if plane.netns is None:
        return StoreUrls(inner, inner)
    return StoreUrls(f"postgresql://ppo@{HOST}:{plane.store_proxy_port}{query}", inner)


def store_proxy_config(plane: ControlPlane) -> str:
    """HAProxy's TCP forward from 127.0.0.1 on this host to PostgreSQL inside the
    control site (nothing of the lab is routed to the host's namespace otherwise)."""
    if plane.netns is None:
        return ""
    return f"""listen store
  mode tcp
  bind {HOST}:{plane.store_proxy_port}
  timeout client 1h
  timeout server 1h
  server pg {HOST}:{plane.pg_port} namespace {plane.netns}
"""
