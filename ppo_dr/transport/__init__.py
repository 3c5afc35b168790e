"""Reaching servers: one :class:`Remote` interface; SSH/SFTP and S3 implementations.

The base types import nothing heavy; ``SshRemote``/``SshPool`` load paramiko and
``S3Remote`` loads boto3 on first use, so code that only needs the types (or one
backend) does not pay for the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ppo_dr.transport.base import (
    AtomicWriter,
    EntryType,
    ExecResult,
    Remote,
    RemoteReader,
    RemoteStat,
    build_command,
    is_temp_name,
    temp_path_for,
)
from ppo_dr.transport.local import LocalRemote

if TYPE_CHECKING:
    from ppo_dr.transport.s3 import S3Remote
    from ppo_dr.transport.ssh import SshPool, SshRemote

__all__ = [
    "AtomicWriter",
    "EntryType",
    "ExecResult",
    "LocalRemote",
    "Remote",
    "RemoteReader",
    "RemoteStat",
    "S3Remote",
    "SshPool",
    "SshRemote",
    "build_command",
    "is_temp_name",
    "temp_path_for",
]


def __getattr__(name: str) -> Any:
    if name in {"SshPool", "SshRemote"}:
        from ppo_dr.transport import ssh

        return getattr(ssh, name)
    if name == "S3Remote":
        from ppo_dr.transport import s3

        return s3.S3Remote
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
