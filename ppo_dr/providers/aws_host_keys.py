"""The SSH host key of a new EC2 instance, learnt from AWS and checked over SSH.

How a fresh instance's host key is trusted (never learnt on first use): the key is
read from the instance's **console output** through the authenticated EC2 API
(``GetConsoleOutput``), where cloud-init prints it at first boot between
``-----BEGIN SSH HOST KEY KEYS-----`` and ``-----END SSH HOST KEY KEYS-----``. That
channel is AWS's, not the network path to the instance, so a man in the middle of the
SSH connection cannot forge it (this is the check AWS documents for new instances).
The launch template's image must run cloud-init with its default key output (every
mainstream AMI does). Until the block appears the instance counts as still booting
(bounded wait, then :class:`TransientError`); a server that then offers another key
fails with :class:`HostKeyError` and is never connected to with our credentials.
Both steps are injectable (``AwsProvider(host_key_source=..., ssh_check=...)``):
tests point the SSH check at a loopback sshd and never connect to an instance's
(fake) address.
"""

from __future__ import annotations

import base64
import socket
import struct
from collections.abc import Callable
from typing import Any

from ppo_dr.errors import HostKeyError, TransientError
from ppo_dr.providers.aws_errors import aws_call

SSH_TIMEOUT_S = 10.0
KEY_BLOCK_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
KEY_BLOCK_END = "-----END SSH HOST KEY KEYS-----"
# Preferred first: the key type we pin when the instance offers several.
KEY_PREFERENCE = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)

#: ``host_key_source(ec2_client, instance_id) -> "type base64"``, or None while unknown.
HostKeySource = Callable[[Any, str], str | None]
#: ``ssh_check(host, port, host_key)``: returns when the server answers SSH with that
#: key; TransientError while it does not answer, HostKeyError for another key.
SshCheck = Callable[[str, int, str], None]


def host_key_from_console(text: str) -> str | None:
    """The preferred host key cloud-init printed in *text*, as ``type base64``.

    The last key block wins (a reboot prints it again). Lines may carry a prefix such
    as ``ec2: ``. A key whose blob does not name its own type is ignored.
    """
    end = text.rfind(KEY_BLOCK_END)
    begin = text.rfind(KEY_BLOCK_BEGIN, 0, end if end >= 0 else None)
    if begin < 0 or end < 0:
        return None
    found: dict[str, str] = {}
    for line in text[begin + len(KEY_BLOCK_BEGIN) : end].splitlines():
        fields = line.split()
        for i, field in enumerate(fields[:-1]):
            if field in KEY_PREFERENCE and _blob_type(fields[i + 1]) == field:
                found.setdefault(field, fields[i + 1])
                break
    for key_type in KEY_PREFERENCE:
        if key_type in found:
            return f"{key_type} {found[key_type]}"
    return None


def _blob_type(b64: str) -> str | None:
    """The key type named inside an OpenSSH public key blob, None if malformed."""
    try:
        blob = base64.b64decode(b64, validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        return blob[4 : 4 + length].decode("ascii") if 0 < length < 64 else None
    except (ValueError, struct.error, UnicodeDecodeError):
        return None


def console_host_key(ec2: Any, instance_id: str) -> str | None:
    """The instance's host key from its console output (None while not printed yet)."""
    with aws_call(f"ec2 get_console_output {instance_id}"):
        answer = ec2.get_console_output(InstanceId=instance_id)
    raw = answer.get("Output") or ""
    # boto3 decodes the base64 for us; be tolerant of a client that does not.
    if KEY_BLOCK_BEGIN not in raw:
        try:
            raw = base64.b64decode(raw, validate=True).decode("utf-8", "replace")
        except ValueError:
            return None
    return host_key_from_console(raw)


def check_ssh_host_key(host: str, port: int, host_key: str, timeout: float = SSH_TIMEOUT_S) -> None:
    """Connect, complete the key exchange and compare the server's key with *host_key*.

    No authentication is attempted: nothing of ours is offered to a server before its
    key is known to be the pinned one.
    """
    import paramiko

    key_type, key_b64 = host_key.split()[:2]
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise TransientError(
            f"ssh {host}:{port} not reachable yet ({exc.strerror or type(exc).__name__})"
        ) from exc
    transport = paramiko.Transport(sock)
    try:
        wanted = (
            ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if key_type == "ssh-rsa" else [key_type]
        )
        try:
            transport.get_security_options().key_types = wanted
        except ValueError:
            raise HostKeyError(
                f"ssh {host}:{port}: host key type {key_type} is not supported"
            ) from None
        transport.start_client(timeout=timeout)
        offered = transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise TransientError(
            f"ssh {host}:{port} did not complete a key exchange ({type(exc).__name__})"
        ) from exc
    finally:
        transport.close()
    if offered.get_name() != key_type or offered.get_base64() != key_b64:
        raise HostKeyError(
            f"ssh {host}:{port} offered a {offered.get_name()} host key that is not the one "
            f"its console output printed ({key_type}): possible man in the middle; not trusted"
        )
