"""Streams through OpenSSH's ssh client against a real sshd (fixture: tests/sshd.py):
the host key pinned, our key only, the feed's end and its failures."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppo_dr.errors import AuthError, HostKeyError, TransientError
from ppo_dr.transport.openssh_client import (
    SshEndpoint,
    client_argv,
    exec_fed,
    stream_endpoint,
)
from ppo_dr.transport.ssh import SshRemote
from tests.sshd import SshdServer

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        stream_endpoint(SshEndpoint("h", 22, "u", "/k", "/kh")) is None, reason="no ssh"
    ),
]


def _endpoint(sshd: SshdServer, **changes: object) -> SshEndpoint:
    fields: dict[str, object] = {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "key_file": str(sshd.client_key),
        "known_hosts": str(sshd.known_hosts),
        "connect_timeout": 5.0,
    }
    fields.update(changes)
    return SshEndpoint(**fields)  # type: ignore[arg-type]


def test_the_command_line_reads_no_configuration_and_trusts_only_our_files() -> None:
    endpoint = SshEndpoint("10.0.0.9", 2222, "ops", "/keys/op", "/etc/ppo/known_hosts")
    argv = client_argv("/usr/bin/ssh", endpoint, "tar --extract")
    options = {argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"}
    assert argv[:3] == ["/usr/bin/ssh", "-F", "none"]
    assert {
        "StrictHostKeyChecking=yes",
        "UserKnownHostsFile=/etc/ppo/known_hosts",
        "GlobalKnownHostsFile=none",
        "UpdateHostKeys=no",
        "IdentityFile=/keys/op",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "BatchMode=yes",
        "PasswordAuthentication=no",
        "ControlPath=none",
        "ForwardAgent=no",
    } <= options
    assert argv[-5:] == ["-l", "ops", "--", "10.0.0.9", "tar --extract"]


@pytest.mark.parametrize(
    "path", ["relative/key", "/with space/key", "/home/%u/key", "~/.ssh/id", "/a\nb", '/a"b']
)
def test_a_file_name_ssh_would_expand_or_split_keeps_the_stream_on_paramiko(path: str) -> None:
    assert stream_endpoint(SshEndpoint("h", 22, "u", path, "/known_hosts")) is None
    assert stream_endpoint(SshEndpoint("h", 22, "u", "/key", path)) is None


def test_a_connection_knows_how_ssh_reaches_the_same_server(sshd: SshdServer) -> None:
    with SshRemote.connect(
        sshd.host, sshd.port, sshd.user, sshd.client_key, sshd.known_hosts
    ) as remote:
        assert remote.endpoint == _endpoint(sshd, connect_timeout=10.0)


def test_the_stream_reaches_the_command_whole(sshd: SshdServer, tmp_path: Path) -> None:
    pieces = [os.urandom(n) for n in (1, 511, 512, 300_000, 2_000_000, 7)] * 3
    out = tmp_path / "received"
    result = exec_fed(_endpoint(sshd), ["dd", f"of={out}", "bs=1M"], 30, iter(pieces))
    assert result.ok, result.stderr
    assert out.read_bytes() == b"".join(pieces)


def test_output_is_kept_up_to_the_limit(sshd: SshdServer) -> None:
    result = exec_fed(
        _endpoint(sshd), ["head", "-c", "300000"], 30, [b"x" * 500_000], max_output=1000
    )
    assert result.ok and result.stdout == b"x" * 1000


def test_a_command_that_stops_reading_ends_the_feed_with_its_status(sshd: SshdServer) -> None:
    def endless() -> Iterator[bytes]:
        while True:
            yield b"\0" * 65536

    result = exec_fed(
        _endpoint(sshd), ["sh", "-c", "head -c 1000 >/dev/null; exit 3"], 30, endless()
    )
    assert result.exit_status == 3


def test_a_failing_producer_cuts_the_stream_rather_than_ending_it(
    sshd: SshdServer, tmp_path: Path
) -> None:
    done = tmp_path / "completed"

    def broken() -> Iterator[bytes]:
        yield b"some data\n"
        raise RuntimeError("a mirror went away")

    # The remote side marks completion only if it sees a clean end of input.
    with pytest.raises(RuntimeError, match="went away"):
        exec_fed(_endpoint(sshd), ["sh", "-c", f"cat >/dev/null && touch {done}"], 30, broken())
    assert not done.exists()


def test_an_unknown_host_key_is_refused_before_anything_is_sent(
    sshd: SshdServer, tmp_path: Path
) -> None:
    other = tmp_path / "known_hosts"
    other.write_text(f"{sshd.known_hosts_name} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKy0\n")
    sent = tmp_path / "sent"
    with pytest.raises(HostKeyError):
        exec_fed(_endpoint(sshd, known_hosts=str(other)), ["dd", f"of={sent}"], 30, [b"secret"])
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(HostKeyError):
        exec_fed(_endpoint(sshd, known_hosts=str(empty)), ["dd", f"of={sent}"], 30, [b"secret"])
    assert not sent.exists()


def test_a_key_the_server_does_not_know_is_an_auth_error(sshd: SshdServer, tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with pytest.raises(AuthError):
        exec_fed(_endpoint(sshd, key_file=str(key)), ["true"], 30, [])


def test_a_command_past_its_deadline_is_stopped(sshd: SshdServer) -> None:
    with pytest.raises(TransientError, match="did not finish within"):
        exec_fed(_endpoint(sshd), ["sleep", "30"], 1.0, [])
