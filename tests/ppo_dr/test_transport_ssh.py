"""SshRemote against a real OpenSSH sshd on loopback (fixture: tests/sshd.py).

The server's file system is this machine's, so tests arrange and inspect trees
directly under ``sshd.data_root`` and use the transport for the side under test.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ppo_dr.errors import (
    AuthError,
    HostKeyError,
    PermanentError,
    RemotePathError,
    TransientError,
    UnsafeInputError,
    is_retryable,
)
from ppo_dr.transport import EntryType, build_command, is_temp_name, temp_path_for
from ppo_dr.transport.ssh import SshPool, SshRemote, translate_error
from ppo_dr.transport.ssh.connection import sftp_limits
from ppo_dr.transport.ssh.remote import STATS_IN_FLIGHT
from tests.sshd import SshdServer
from tests.threads import run_in_threads

pytestmark = pytest.mark.timeout(60)


def _connect(sshd: SshdServer, **overrides: object) -> SshRemote:
    args: dict[str, object] = {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "key_file": sshd.client_key,
        "known_hosts": sshd.known_hosts,
        "timeout": 5.0,
    }
    args.update(overrides)
    return SshRemote.connect(**args)  # type: ignore[arg-type]


def _new_ed25519(path: Path) -> str:
    """Write a fresh OpenSSH private key to *path*; return its public line."""
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode()


def _tree(root: Path) -> dict[str, tuple[str, int, int]]:
    """(type, size, mtime) for every entry below *root*, as os.lstat sees it."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st = full.lstat()
            found[str(full.relative_to(root))] = (
                stat.filemode(st.st_mode),
                st.st_size,
                int(st.st_mtime),
            )
    return found


@pytest.fixture(scope="module")
def remote(sshd: SshdServer) -> Iterator[SshRemote]:
    with _connect(sshd) as r:
        yield r


@pytest.fixture
def root(sshd: SshdServer, request: pytest.FixtureRequest) -> Path:
    """A fresh directory on the server for one test."""
    path = sshd.data_root / request.node.name.replace("[", "-").replace("]", "")
    path.mkdir()
    return path


# ----- connecting ---------------------------------------------------------------------


def test_connect_prefers_aes_gcm_and_names_the_server(remote: SshRemote, sshd: SshdServer) -> None:
    assert remote.cipher == "aes128-gcm@openssh.com"
    assert remote.label == f"{sshd.user}@127.0.0.1:{sshd.port}"
    assert remote.alive()
    # OpenSSH's limits@openssh.com lets us use 255 KiB requests instead of 32 KiB.
    assert remote.read_size == remote.write_size == 255 * 1024


def test_servers_without_the_limits_extension_get_32_kib() -> None:
    class Plain:
        def _request(self, *_args: object) -> None:
            raise OSError("Operation unsupported")

    assert sftp_limits(Plain()) == (32768, 32768)  # type: ignore[arg-type]


def test_unknown_host_key_is_permanent_and_names_host_and_file(
    sshd: SshdServer, tmp_path: Path
) -> None:
    other = tmp_path / "known_hosts"
    # A key for this host on another port does not count: OpenSSH files them apart.
    other.write_text(f"[127.0.0.1]:{sshd.port + 1} {sshd.host_public_key}\n")
    with pytest.raises(HostKeyError) as caught:
        _connect(sshd, known_hosts=other)
    message = str(caught.value)
    assert f"127.0.0.1:{sshd.port}" in message
    assert str(other) in message
    assert "unknown" in message
    assert not is_retryable(caught.value)


def test_hashed_known_hosts_entries_are_understood(sshd: SshdServer, tmp_path: Path) -> None:
    hashed = tmp_path / "known_hosts"
    hashed.write_text(sshd.known_hosts.read_text())
    subprocess.run(["ssh-keygen", "-H", "-f", str(hashed)], check=True, capture_output=True)
    assert hashed.read_text().startswith("|1|")
    with _connect(sshd, known_hosts=hashed) as r:
        assert r.alive()


def test_missing_known_hosts_file_is_a_host_key_error(sshd: SshdServer, tmp_path: Path) -> None:
    with pytest.raises(HostKeyError, match="cannot read known_hosts"):
        _connect(sshd, known_hosts=tmp_path / "absent")


def test_changed_host_key_refuses_before_auth_and_writes_nothing(
    sshd: SshdServer, tmp_path: Path
) -> None:
    impostor = _new_ed25519(tmp_path / "impostor")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {impostor}\n")
    before_tree = _tree(sshd.data_root)
    logins, connections = sshd.accepted_logins(), sshd.connections_seen()

    target = sshd.data_root / "mitm-test.txt"
    with pytest.raises(HostKeyError) as caught, _connect(sshd, known_hosts=known_hosts) as r:
        r.write_bytes(str(target), b"should never arrive")

    message = str(caught.value)
    assert "host key changed — possible man-in-the-middle" in message
    assert "AAAA" not in message and "PRIVATE" not in message  # no key material
    assert caught.value.__cause__ is None
    assert not is_retryable(caught.value)
    time.sleep(0.2)  # let sshd log the disconnect
    assert sshd.connections_seen() == connections + 1  # one attempt, no retry
    assert sshd.accepted_logins() == logins  # our key was never offered/accepted
    assert not target.exists()
    assert _tree(sshd.data_root) == before_tree
    assert known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {impostor}\n"  # not "fixed"


def test_wrong_client_key_is_an_auth_error(sshd: SshdServer, tmp_path: Path) -> None:
    _new_ed25519(tmp_path / "stranger")
    with pytest.raises(AuthError) as caught:
        _connect(sshd, key_file=tmp_path / "stranger")
    assert f"127.0.0.1:{sshd.port}" in str(caught.value)
    assert not is_retryable(caught.value)


def test_unreadable_client_key_is_an_auth_error_without_its_content(
    sshd: SshdServer, tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus_key"
    bogus.write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    with pytest.raises(AuthError) as caught:
        _connect(sshd, key_file=bogus)
    assert "c2VjcmV0" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_refused_port_is_transient(sshd: SshdServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(TransientError) as caught:
        _connect(sshd, port=closed_port)
    assert is_retryable(caught.value)


# ----- files ----------------------------------------------------------------------------


def test_write_is_atomic_temp_name_never_final(remote: SshRemote, root: Path) -> None:
    final = root / "pack-0001"
    final.write_bytes(b"old")
    data = os.urandom(3 * 1024 * 1024 + 17)
    with remote.open_write(str(final), mode=0o640) as writer:
        i = 0
        for step in [1, 7, 1 << 20, 300_001, 65536] * 4:  # odd sizes: requests are re-cut
            writer.write(data[i : i + step])
            i += step
        writer.write(data[i:])
        # Mid-write: readers still see the old file; the temp is a hidden sibling.
        assert final.read_bytes() == b"old"
        temps = [p.name for p in root.iterdir() if p.name != "pack-0001"]
        assert temps == [Path(writer.temp_path).name]
        assert is_temp_name(writer.temp_path)
    assert final.read_bytes() == data
    assert stat.S_IMODE(final.stat().st_mode) == 0o640
    assert sorted(p.name for p in root.iterdir()) == ["pack-0001"]
    assert remote.read_bytes(str(final)) == data

    remote.write_bytes(str(root / "small"), b"")
    assert remote.read_bytes(str(root / "small")) == b""


def test_failed_write_leaves_final_untouched_and_no_temp(remote: SshRemote, root: Path) -> None:
    final = root / "manifest.json"
    final.write_bytes(b"previous snapshot")
    with pytest.raises(RuntimeError), remote.open_write(str(final)) as writer:
        writer.write(b"half a manifest")
        raise RuntimeError("crash mid-write")
    assert final.read_bytes() == b"previous snapshot"
    assert [p.name for p in root.iterdir()] == ["manifest.json"]


@pytest.fixture
def tiny_disk(root: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs under *root*, to see a full disk; skipped where mount is refused."""
    mount_point = root / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_full_disk_fails_the_commit_and_keeps_the_old_file(
    remote: SshRemote, tiny_disk: Path
) -> None:
    final = tiny_disk / "pack"
    final.write_bytes(b"old")
    with pytest.raises(RemotePathError, match="refused by the server") as caught:
        remote.write_bytes(str(final), os.urandom(3 * 1024 * 1024))
    assert not is_retryable(caught.value)
    assert final.read_bytes() == b"old"
    assert [p.name for p in tiny_disk.iterdir()] == ["pack"]  # temp removed
    assert remote.alive()


def test_open_read_streams_in_chunks(remote: SshRemote, root: Path) -> None:
    data = os.urandom(1_000_003)
    (root / "blob").write_bytes(data)
    parts = []
    with remote.open_read(str(root / "blob")) as reader:
        while chunk := reader.read(65536):
            parts.append(chunk)
    assert b"".join(parts) == data
    with remote.open_read(str(root / "blob"), size_hint=1000) as reader:  # grew since walk
        assert reader.read() == data
    with remote.open_read(str(root / "blob"), size_hint=5_000_000) as reader:  # shrank
        assert reader.read() == data
    (root / "empty").write_bytes(b"")
    assert remote.read_bytes(str(root / "empty")) == b""
    with remote.open_read(str(root / "blob")) as reader:  # abandoned after one chunk
        assert reader.read(10) == data[:10]
    assert remote.read_bytes(str(root / "blob")) == data  # the session is still in step


def test_read_range_reads_only_its_range(remote: SshRemote, root: Path) -> None:
    data = os.urandom(3_000_001)
    path = str(root / "pack")
    (root / "pack").write_bytes(data)
    for offset, length in [(0, 10), (5, 1_500_000), (2_999_000, 1), (1_234_567, 765_433)]:
        assert remote.read_range(path, offset, length) == data[offset : offset + length]
    assert remote.read_range(path, 2_999_990, 100) == data[2_999_990:]  # short at the end
    assert remote.read_range(path, 4_000_000, 10) == b""  # wholly past the end
    assert remote.read_range(path, 7, 0) == b""
    with pytest.raises(UnsafeInputError, match="negative"):
        remote.read_range(path, -1, 10)
    with pytest.raises(RemotePathError):
        remote.read_range(str(root / "missing"), 0, 10)
    # No request strayed past a range: the session is in step for the next read.
    assert remote.read_bytes(path) == data


ODD_NAMES = ["with space", "ünïcødé-文件", "new\nline", "-leading-dash", "quote'\"$(x)`y`"]


def test_walk_reports_every_entry_without_following_links(remote: SshRemote, root: Path) -> None:
    (root / "empty-dir").mkdir()
    (root / "sub" / "deeper").mkdir(parents=True)
    for i, name in enumerate(ODD_NAMES):
        (root / "sub" / name).write_bytes(b"x" * i)
    (root / "sub" / "deeper" / "f").write_bytes(b"")
    (root / "link-to-file").symlink_to("sub/with space")
    (root / "link-to-dir").symlink_to("sub")
    (root / "dangling").symlink_to("../../nowhere")
    latin1 = os.fsencode(str(root / "sub")) + b"/caf\xe9"  # not UTF-8 on the server
    Path(os.fsdecode(latin1)).write_bytes(b"latin")

    entries = {e.path: e for e in remote.walk(str(root))}

    expected = _tree(root)
    assert set(entries) == set(expected)
    for path, (mode, size, mtime) in expected.items():
        entry = entries[path]
        assert stat.filemode(entry.mode | _type_bits(entry.type)) == mode, path
        assert entry.mtime == mtime, path
        if entry.type is EntryType.FILE:
            assert entry.size == size, path
    assert entries["empty-dir"].type is EntryType.DIR
    assert entries["link-to-dir"].type is EntryType.SYMLINK
    assert entries["link-to-dir"].link_target == "sub"
    assert entries["dangling"].link_target == "../../nowhere"
    assert "link-to-dir/deeper" not in entries  # not followed
    assert entries["sub/new\nline"].size == 2
    # Parents come before children.
    order = [e.path for e in remote.walk(str(root))]
    assert order.index("sub") < order.index("sub/deeper") < order.index("sub/deeper/f")
    # A non-UTF-8 name round-trips: read it back through the name walk gave us.
    latin_entry = next(p for p in entries if p.startswith("sub/caf"))
    assert remote.read_bytes(f"{root}/{latin_entry}") == b"latin"


def _type_bits(kind: EntryType) -> int:
    return {
        EntryType.FILE: stat.S_IFREG,
        EntryType.DIR: stat.S_IFDIR,
        EntryType.SYMLINK: stat.S_IFLNK,
        EntryType.OTHER: 0,
    }[kind]


def test_stat_utime_chmod_round_trip(remote: SshRemote, root: Path) -> None:
    path = str(root / "f")
    remote.write_bytes(path, b"12345")
    remote.chmod(path, 0o600)
    remote.utime(path, 1_000_000_000)
    st = remote.stat(path)
    assert st is not None
    assert (st.type, st.mode, st.mtime, st.size) == (EntryType.FILE, 0o600, 1_000_000_000, 5)
    assert st.name == "f"
    assert (root / "f").stat().st_mtime == 1_000_000_000
    assert remote.stat(str(root / "absent")) is None


def test_stat_many_answers_each_path_in_order_across_windows(remote: SshRemote, root: Path) -> None:
    """More paths than one window of requests in flight, present and absent mixed, a
    directory and a symlink among them: the same answers as one stat each."""
    paths = []
    for i in range(STATS_IN_FLIGHT * 2 + 5):
        path = root / f"p{i:03d}"
        if i % 3:
            path.write_bytes(b"x" * i)
        paths.append(str(path))
    (root / "d").mkdir()
    (root / "link").symlink_to("p001")
    paths += [str(root / "d"), str(root / "link"), str(root / "no" / "such")]
    many = remote.stat_many(paths)
    assert many == [remote.stat(p) for p in paths]
    assert [s is None for s in many[:6]] == [True, False, False, True, False, False]
    assert many[5] is not None and many[5].size == 5
    assert many[-3] is not None and many[-3].type is EntryType.DIR
    assert many[-2] is not None and many[-2].type is EntryType.SYMLINK
    assert many[-1] is None
    assert remote.stat_many([]) == []
    remote.write_bytes(str(root / "after"), b"ok")  # the session is in step afterwards
    assert remote.read_bytes(str(root / "after")) == b"ok"


def test_namespace_operations(remote: SshRemote, root: Path) -> None:
    deep = f"{root}/a/b/c"
    remote.mkdir_p(deep, mode=0o700)
    remote.mkdir_p(deep)  # already there: fine
    assert (root / "a" / "b" / "c").is_dir()
    remote.write_bytes(f"{deep}/x", b"x")
    remote.write_bytes(f"{deep}/y", b"y")
    with pytest.raises(RemotePathError):
        remote.mkdir_p(f"{deep}/x")  # a file is in the way
    with pytest.raises(RemotePathError):
        remote.rename(f"{deep}/x", f"{deep}/y")  # plain rename never clobbers
    remote.rename_into_place(f"{deep}/x", f"{deep}/y")  # this one replaces
    assert (root / "a/b/c/y").read_bytes() == b"x"
    remote.symlink("y", f"{deep}/ln")
    assert (root / "a/b/c/ln").readlink() == Path("y")
    assert remote.readlink(f"{deep}/ln") == "y"
    remote.remove(f"{deep}/ln")
    remote.remove(f"{deep}/y")
    remote.rmdir(deep)
    assert not (root / "a/b/c").exists()


def test_missing_paths_are_permanent_path_errors(remote: SshRemote, root: Path) -> None:
    for call in (
        lambda: remote.read_bytes(f"{root}/nope"),
        lambda: list(remote.walk(f"{root}/nope")),
        lambda: remote.remove(f"{root}/nope"),
        lambda: remote.write_bytes(f"{root}/no/such/dir/f", b""),
    ):
        with pytest.raises(RemotePathError) as caught:
            call()
        assert "nope" in str(caught.value) or "no/such" in str(caught.value)
        assert not is_retryable(caught.value)
    assert remote.alive()  # a path error does not cost the connection


# ----- commands -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hostile",
    ["a; touch {m}", "$(touch {m})", "`touch {m}`", "x\ntouch {m}", "a' ; touch {m} ; '"],
)
def test_exec_hostile_argument_stays_one_argument(
    remote: SshRemote, root: Path, hostile: str
) -> None:
    marker = root / "pwned"
    arg = hostile.format(m=marker)
    result = remote.exec(["printf", "%s", arg], timeout=10)
    assert result.ok
    assert result.stdout == arg.encode()
    assert not marker.exists()


def test_exec_literal_tmp_pwned_is_not_executed(remote: SshRemote) -> None:
    pwned = Path("/tmp/pwned")
    existed = pwned.exists()
    result = remote.exec(["echo", "a; touch /tmp/pwned"], timeout=10)
    assert result.stdout == b"a; touch /tmp/pwned\n"
    assert pwned.exists() == existed


def test_exec_exit_status_and_streams(remote: SshRemote) -> None:
    result = remote.exec(["sh", "-c", 'echo out; echo err >&2; exit "$1"', "sh", "3"], timeout=10)
    assert (result.exit_status, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert not result.ok
    big = remote.exec(["head", "-c", "3000000", "/dev/zero"], timeout=10)
    assert len(big.stdout) == 3_000_000


def test_exec_timeout_is_transient_and_stops_the_command(remote: SshRemote, root: Path) -> None:
    marker = root / "finished"
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        remote.exec(["sh", "-c", 'sleep 1 && touch "$1"', "sh", str(marker)], timeout=0.3)
    assert time.monotonic() - started < 0.9
    assert is_retryable(caught.value)
    assert "0.3 s" in str(caught.value)
    time.sleep(max(0.0, started + 1.5 - time.monotonic()))
    assert not marker.exists()  # the server stopped the whole process group
    assert remote.exec(["true"], timeout=5).ok  # the connection is still good


def test_exec_timeout_without_server_side_enforcement_still_returns(remote: SshRemote) -> None:
    started = time.monotonic()
    with pytest.raises(TransientError, match="SIGTERM"):
        remote.exec(["sleep", "3"], timeout=0.3, enforce_on_server=False)
    assert time.monotonic() - started < 1.5


def test_temp_names_are_hidden_siblings_within_name_max() -> None:
    long_name = "é" * 127  # 254 bytes
    temp = temp_path_for(f"/data/{long_name}")
    assert temp.startswith("/data/.ppo-tmp-") and is_temp_name(temp)
    assert len(temp.rsplit("/", 1)[1].encode()) <= 255
    assert temp != temp_path_for(f"/data/{long_name}")


def test_build_command_refuses_what_it_cannot_quote() -> None:
    assert build_command(["ls", "-l", "a b"]) == "ls -l 'a b'"
    with pytest.raises(UnsafeInputError):
        build_command("rm -rf /")  # type: ignore[arg-type]
    with pytest.raises(UnsafeInputError):
        build_command([])
    with pytest.raises(UnsafeInputError):
        build_command(["echo", "a\x00b"])


# ----- pool and failures mid-session ----------------------------------------------------


def test_pool_reuses_one_connection_across_threads(sshd: SshdServer) -> None:
    connections = sshd.connections_seen()
    with SshPool(sshd.client_key, sshd.known_hosts) as pool:
        got: list[SshRemote] = []
        run_in_threads(lambda _n: got.append(pool.get(sshd.host, sshd.port, sshd.user)), 8)
        assert len({id(r) for r in got}) == 1
        assert pool.get(sshd.host, sshd.port, sshd.user) is got[0]
    time.sleep(0.1)
    assert sshd.connections_seen() == connections + 1
    assert not got[0].alive()  # closed with the pool


def test_one_connection_serves_many_threads(remote: SshRemote, root: Path) -> None:
    """paramiko's SFTPClient alone lets a thread swallow another's reply and hang."""

    def worker(n: int) -> None:
        for i in range(15):
            path = f"{root}/t{n}-{i}"
            # Up to 1.4 MB: multi-packet writes interleaved with other threads' reads.
            data = os.urandom(100 + 100_000 * i)
            remote.write_bytes(path, data)
            assert remote.read_bytes(path) == data
            assert remote.stat(path) is not None

    run_in_threads(worker, 6)
    assert len(list(root.iterdir())) == 90


def test_pool_recovers_after_the_server_drops_the_connection(sshd: SshdServer, root: Path) -> None:
    with SshPool(sshd.client_key, sshd.known_hosts) as pool:
        first = pool.get(sshd.host, sshd.port, sshd.user)
        first.write_bytes(str(root / "before"), b"1")
        assert sshd.signal_connection(first.local_port, signal.SIGKILL) >= 1
        with pytest.raises(TransientError) as caught:
            for _ in range(50):  # until our side notices the drop
                first.stat(str(root / "before"))
                time.sleep(0.02)
        assert is_retryable(caught.value)
        assert not first.alive()
        second = pool.get(sshd.host, sshd.port, sshd.user)
        assert second is not first
        second.write_bytes(str(root / "after"), b"2")
        assert (root / "after").read_bytes() == b"2"


def test_hung_server_times_out_instead_of_hanging(sshd: SshdServer, root: Path) -> None:
    with _connect(sshd, io_timeout=0.5) as r:
        r.write_bytes(str(root / "f"), b"x")
        stopped = sshd.signal_connection(r.local_port, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(TransientError, match="timed out"):
                r.read_bytes(str(root / "f"))
            assert time.monotonic() - started < 2
            assert not r.alive()  # retired: its SFTP state is out of step
        finally:
            assert stopped >= 1
            sshd.signal_connection(r.local_port, signal.SIGKILL)


# ----- translation table ----------------------------------------------------------------

W, OP = "root@h:22", "stat '/x'"


@pytest.mark.parametrize(
    ("exc", "alive", "expected"),
    [
        (paramiko.PasswordRequiredException("x"), True, AuthError),
        (paramiko.BadAuthenticationType("x", ["password"]), True, AuthError),
        (paramiko.AuthenticationException("x"), True, AuthError),
        (TimeoutError(), True, TransientError),
        (TimeoutError(), True, TransientError),
        (ConnectionResetError(errno.ECONNRESET, "reset"), True, TransientError),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True, TransientError),
        (EOFError(), True, TransientError),
        (
            paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.1", 1): OSError()}),
            True,
            TransientError,
        ),
        (socket.gaierror(socket.EAI_AGAIN, "try again"), True, TransientError),
        (socket.gaierror(socket.EAI_NONAME, "unknown"), True, PermanentError),
        (paramiko.ssh_exception.IncompatiblePeer("no kex"), True, PermanentError),
        (FileNotFoundError(errno.ENOENT, "No such file"), True, RemotePathError),
        (PermissionError(errno.EACCES, "Permission denied"), True, RemotePathError),
        (OSError("Failure"), True, RemotePathError),  # SFTP catch-all, connection fine
        (OSError("Socket is closed"), False, TransientError),  # same class, dead connection
        (FileNotFoundError(errno.ENOENT, "No such file"), False, TransientError),
        (OSError(errno.EHOSTUNREACH, "No route"), True, TransientError),
        (paramiko.SSHException("Server connection dropped"), True, TransientError),
        (ValueError("a bug"), True, None),
    ],
)
def test_translate_error_most_specific_first(
    exc: BaseException, alive: bool, expected: type[Exception] | None
) -> None:
    err = translate_error(exc, W, OP, alive=alive)
    if expected is None:
        assert err is None
    else:
        assert type(err) is expected
        assert W in str(err)


def test_translate_bad_host_key_exception_hides_the_keys(tmp_path: Path) -> None:
    _new_ed25519(tmp_path / "a")
    _new_ed25519(tmp_path / "b")
    got, expected = (paramiko.PKey.from_path(tmp_path / n) for n in "ab")
    err = translate_error(paramiko.BadHostKeyException("h", got, expected), W, "connect")
    assert isinstance(err, HostKeyError)
    assert "possible man-in-the-middle" in str(err)
    assert got.get_base64() not in str(err)
