"""The lab server: SSH/SFTP as the OpenSSH client and paramiko see it, restricted exec, the app.

One app server process (``python -m ppo_dr.lab.server``) serves the whole module;
tests that break a server (faults, signals) start their own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import stat as stat_mod
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paramiko
import pytest
from conftest import (
    CLIENTS,
    MiniLab,
    keygen,
    paramiko_client,
    require_openssh_client,
    wait_for_port,
)

from ppo_dr.mirror.api import ClientSource, ensure_repository, restore, snapshot_server
from ppo_dr.mirror.tar_stream import END_OF_ARCHIVE, extract_command
from ppo_dr.transport import LocalRemote
from ppo_dr.transport.ssh import SshRemote
from tests.ppo_dr.mirror.helpers import (
    T0,
    inode_groups,
    itemised_differences,
    local_target,
    odd_tree,
)

pytestmark = [pytest.mark.lab, pytest.mark.timeout(60)]

APP = "app-jhb1-1"


@pytest.fixture(scope="module")
def app_lab(rt_minilab: MiniLab) -> Iterator[MiniLab]:
    """The module's lab with the app server running, and a trap: links leading out of fs."""
    require_openssh_client()
    data = rt_minilab.fs(APP) / "srv/ppo"
    (data / "escape-dir").symlink_to("/etc")
    (data / "escape-file").symlink_to("/etc/passwd")
    (data / "inside-link").symlink_to("tenants/acme/files/hello.txt")
    rt_minilab.start_server(APP)
    yield rt_minilab


def http(
    lab: MiniLab, method: str, path: str, body: Any = None, server: str = APP
) -> tuple[int, dict[str, str], bytes]:
    url = f"http://127.0.0.1:{lab.ports[server]['http']}{path}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - http://127.0.0.1 only
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# ------------------------------------------------------------------------ SSH: who gets in


def test_operator_key_logs_in_and_host_key_is_checked(app_lab: MiniLab) -> None:
    result = app_lab.ssh(APP, "health")
    assert result.returncode == 0, result.stderr
    health = json.loads(result.stdout)
    said = datetime.fromisoformat(health.pop("time"))
    assert abs((said - datetime.now(UTC)).total_seconds()) < 60
    assert health == {"server": APP, "role": "app", "data_root_ok": True}


def test_a_skewed_server_reports_its_own_clock(app_lab: MiniLab) -> None:
    clock = app_lab.config_path(APP).parent / "clock.json"
    clock.write_text(json.dumps({"skew_s": 7200}))
    try:
        said = json.loads(app_lab.ssh(APP, "health").stdout)["time"]
        ahead = (datetime.fromisoformat(said) - datetime.now(UTC)).total_seconds()
        assert 7200 - 60 < ahead < 7200 + 60
    finally:
        clock.unlink()
    said = json.loads(app_lab.ssh(APP, "health").stdout)["time"]
    assert abs((datetime.fromisoformat(said) - datetime.now(UTC)).total_seconds()) < 60


def test_wrong_host_key_makes_the_client_refuse(app_lab: MiniLab, tmp_path: Path) -> None:
    other = keygen(tmp_path / "impostor", "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{app_lab.ports[APP]['ssh']} {' '.join(other.split()[:2])}\n")
    result = app_lab.ssh(APP, "health", "-o", "LogLevel=INFO", known_hosts=known)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr
    assert result.stdout == ""


def test_passwords_and_keyboard_interactive_are_not_offered(app_lab: MiniLab) -> None:
    result = app_lab.ssh(
        APP,
        "health",
        "-o", "PubkeyAuthentication=no",
        "-o", "PreferredAuthentications=password,keyboard-interactive",
        "-o", "LogLevel=INFO",
    )  # fmt: skip
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


def test_unknown_key_and_wrong_user_are_refused(app_lab: MiniLab, tmp_path: Path) -> None:
    keygen(tmp_path / "stranger", "stranger")
    stranger = app_lab.ssh(APP, "health", "-o", "LogLevel=INFO", identity=tmp_path / "stranger")
    assert stranger.returncode == 255 and "Permission denied" in stranger.stderr
    root = app_lab.ssh(APP, "health", "-o", "LogLevel=INFO", user="root")
    assert root.returncode == 255 and "Permission denied" in root.stderr


def test_interactive_shells_and_ptys_are_refused(app_lab: MiniLab) -> None:
    shell = app_lab.ssh(APP, "", "-T", "-o", "LogLevel=INFO")
    assert shell.returncode == 255 and "shell request failed" in shell.stderr
    pty = app_lab.ssh(APP, "health", "-tt", "-o", "LogLevel=INFO")
    assert pty.returncode == 255 and "PTY allocation request failed" in pty.stderr
    assert pty.stdout == ""


def app_client(lab: MiniLab) -> AbstractContextManager[paramiko.SSHClient]:
    """A paramiko client of the app server, its host key pinned from the lab's keys."""
    pub = (lab.dir / "keys" / f"{APP}_host_ed25519.pub").read_text().split()
    pinned = paramiko.HostKeys()
    pinned.add(
        f"[127.0.0.1]:{lab.ports[APP]['ssh']}",
        pub[0],
        paramiko.Ed25519Key(data=base64.b64decode(pub[1])),
    )
    return paramiko_client(lab.ports[APP]["ssh"], lab.operator_key, pinned)


def test_paramiko_interop_exec_and_sftp(app_lab: MiniLab) -> None:
    """The runbooks' transport speaks paramiko: exec (with its timeout wrapper) and SFTP."""
    with app_client(app_lab) as client:
        _stdin, stdout, _stderr = client.exec_command("timeout --kill-after=5 30.000 health")
        assert json.loads(stdout.read())["server"] == APP
        assert stdout.channel.recv_exit_status() == 0
        sftp = client.open_sftp()
        assert sorted(sftp.listdir("/srv/ppo/tenants")) == sorted(CLIENTS)
        with sftp.open("/srv/ppo/tenants/globex/files/new.tmp", "wb") as handle:
            handle.write(b"via paramiko")
        sftp.posix_rename(
            "/srv/ppo/tenants/globex/files/new.tmp", "/srv/ppo/tenants/globex/files/new.txt"
        )
        assert (app_lab.client_dir(APP, "globex") / "files/new.txt").read_bytes() == b"via paramiko"
        assert sftp.normalize(".") == "/"


def test_sftp_links_are_links_and_only_inside_ones_are_followed(app_lab: MiniLab) -> None:
    with app_client(app_lab) as client:
        sftp = client.open_sftp()
        assert sftp.readlink("/srv/ppo/inside-link") == "tenants/acme/files/hello.txt"
        # A link leading out can be seen and removed as a link, never followed.
        assert stat_mod.S_ISLNK(sftp.lstat("/srv/ppo/escape-dir").st_mode or 0)
        with pytest.raises(PermissionError):
            sftp.stat("/srv/ppo/escape-dir")
        with pytest.raises(PermissionError):
            sftp.listdir("/srv/ppo/escape-dir")
        with pytest.raises(PermissionError):
            sftp.open("/srv/ppo/escape-file").read()
        # Links made over SFTP read back as they were written, and work.
        acme = "/srv/ppo/tenants/acme"
        sftp.symlink("files/hello.txt", f"{acme}/rel-link")
        sftp.symlink(f"{acme}/files/hello.txt", f"{acme}/abs-link")
        assert sftp.readlink(f"{acme}/rel-link") == "files/hello.txt"
        assert sftp.readlink(f"{acme}/abs-link") == f"{acme}/files/hello.txt"
        for link in ("rel-link", "abs-link"):
            with sftp.open(f"{acme}/{link}") as handle:
                assert handle.read() == b"hello from acme\n"
            sftp.remove(f"{acme}/{link}")


# ------------------------------------------------------------------------ SFTP


def test_sftp_put_get_and_list_under_srv_ppo(app_lab: MiniLab, tmp_path: Path) -> None:
    local = tmp_path / "upload.bin"
    local.write_bytes(os.urandom(300_000))
    back = tmp_path / "back.bin"
    result = app_lab.sftp(
        APP,
        f"put {local} /srv/ppo/tenants/acme/files/upload.bin\n"
        f"get /srv/ppo/tenants/acme/files/upload.bin {back}\n"
        "ls -1 /srv/ppo/tenants/acme/files\n"
        "mkdir /srv/ppo/tenants/acme/newdir\n"
        "rmdir /srv/ppo/tenants/acme/newdir\n"
        "rm /srv/ppo/tenants/acme/files/upload.bin\n",
    )
    assert result.returncode == 0, result.stderr
    assert back.read_bytes() == local.read_bytes()
    assert "upload.bin" in result.stdout and "hello.txt" in result.stdout
    assert not (app_lab.client_dir(APP, "acme") / "files/upload.bin").exists()


@pytest.mark.parametrize(
    "command",
    [
        "get ../../etc/passwd {out}",
        "get /../../../../etc/passwd {out}",
        "get /srv/ppo/escape-file {out}",
        "get /srv/ppo/escape-dir/passwd {out}",
        "ls /srv/ppo/escape-dir/",
        "put {src} /srv/ppo/escape-dir/planted",
    ],
)
def test_sftp_cannot_leave_the_servers_filesystem(
    app_lab: MiniLab, tmp_path: Path, command: str
) -> None:
    out, src = tmp_path / "out", tmp_path / "src"
    src.write_text("planted")
    result = app_lab.sftp(APP, command.format(out=out, src=src) + "\n")
    # Nothing of the host's /etc comes back, nothing lands there. (`ls` of the link
    # itself may succeed: it shows the link, not what it points to.)
    assert "passwd" not in result.stdout.split("\n", 1)[-1]
    assert "root:" not in result.stdout
    assert not out.exists()
    assert not Path("/etc/planted").exists()
    if not command.startswith("ls"):
        assert result.returncode != 0


def test_sftp_follows_links_that_stay_inside(app_lab: MiniLab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = app_lab.sftp(APP, f"get /srv/ppo/inside-link {out}\n")
    assert result.returncode == 0, result.stderr
    assert out.read_text() == "hello from acme\n"


# ------------------------------------------------------------------------ restricted exec


def test_exec_df_du_sha256sum(app_lab: MiniLab) -> None:
    df = app_lab.ssh(APP, "df")
    assert df.returncode == 0, df.stderr
    space = json.loads(df.stdout)
    assert space["total"] >= space["used"] > 0 and space["free"] > 0

    files = app_lab.client_dir(APP, "globex") / "files"
    (files / "sized.bin").write_bytes(b"x" * 1000)
    expected = sum(p.stat().st_size for p in files.rglob("*") if p.is_file())
    du = app_lab.ssh(APP, "du /srv/ppo/tenants/globex/files")
    assert du.returncode == 0, du.stderr
    assert int(du.stdout) == expected

    digest = hashlib.sha256(b"x" * 1000).hexdigest()
    sha = app_lab.ssh(APP, "sha256sum /srv/ppo/tenants/globex/files/sized.bin")
    assert sha.stdout == f"{digest}  /srv/ppo/tenants/globex/files/sized.bin\n"


def test_exec_freeze_unfreeze_and_snapshot_hook(app_lab: MiniLab) -> None:
    cdir = app_lab.client_dir(APP, "acme")
    assert app_lab.ssh(APP, "freeze acme").returncode == 0
    assert (cdir / ".ppo-frozen").exists()
    assert app_lab.ssh(APP, "freeze acme").returncode == 0  # idempotent
    status, _h, body = http(
        app_lab, "POST", "/c/acme/journal", {"seq": 1, "ts": "t", "writer": "w"}
    )
    assert (status, json.loads(body)["error"]) == (503, "frozen")
    assert app_lab.ssh(APP, "unfreeze acme").returncode == 0
    assert not (cdir / ".ppo-frozen").exists()
    status, _h, _b = http(app_lab, "POST", "/c/acme/journal", {"seq": 2, "ts": "t", "writer": "w"})
    assert status == 200

    hook = app_lab.ssh(APP, "snapshot-hook acme")
    assert hook.returncode == 0, hook.stderr
    answer = json.loads(hook.stdout)
    assert answer["dump"] == "/srv/ppo/tenants/acme/.ppo-dump/journal.dump"
    dump = (cdir / ".ppo-dump/journal.dump").read_bytes()
    assert dump == (cdir / "journal/journal.log").read_bytes()
    assert answer["records"] == dump.count(b"\n") >= 1
    assert not list((cdir / ".ppo-dump").glob("*.tmp"))


@pytest.mark.parametrize(
    ("command", "status", "stderr"),
    [
        ("health; rm -rf /", 127, "command not allowed: health;"),
        ("rm -rf /", 127, "command not allowed: rm"),
        ("$(id)", 127, "command not allowed: $(id)"),
        ("sh -c health", 127, "command not allowed: sh"),
        ("timeout 5 sh -c id", 127, "command not allowed: sh"),
        ("du ../../", 2, "must be an absolute path"),
        ("du /srv/ppo/../../..", 2, "must not contain '..'"),
        ("du /srv/ppo/escape-dir", 2, "outside the server's filesystem"),
        ("sha256sum /srv/ppo/escape-file", 2, "outside the server's filesystem"),
        ('freeze "a;b"', 2, "client id 'a;b' refused"),
        ("freeze ../acme", 2, "refused"),
        ("health extra", 2, "usage: health"),
        ("du '/srv/ppo", 2, "cannot parse"),
        ("freeze nobody", 1, "not in the fleet"),
        ("du /srv/ppo/missing", 1, "no such file"),
        ("sha256sum /srv/ppo/tenants", 1, "not a regular file"),
    ],
)
def test_hostile_or_broken_exec_is_refused(
    app_lab: MiniLab, command: str, status: int, stderr: str
) -> None:
    result = app_lab.ssh(APP, command)
    assert result.returncode == status, result.stderr
    assert stderr in result.stderr
    assert result.stdout == ""


def test_restore_streams_into_the_lab_server_as_into_openssh(
    app_lab: MiniLab, tmp_path: Path
) -> None:
    """The restore's tar receiver works here too, exactly, and only inside the data root."""
    src = tmp_path / "c1"
    odd_tree(src)
    target = local_target(tmp_path, "m1")
    ensure_repository(target, app_server="app1")
    done = snapshot_server(
        LocalRemote(), "app1", [ClientSource("c1", str(src))], [target], taken_at=T0
    )
    port = app_lab.ports[APP]["ssh"]
    with SshRemote.connect(
        "127.0.0.1", port, "ppo", app_lab.operator_key, app_lab.known_hosts
    ) as dest:
        result = restore([target], "c1", done[0].snapshot_id, dest, "/srv/ppo/restored/c1")
        assert result.refused == []
        out = app_lab.fs(APP) / "srv/ppo/restored/c1"
        assert itemised_differences(src, out) == []
        assert inode_groups(out) == inode_groups(src)
        assert (out / "sparse.img").stat().st_blocks * 512 < 1 << 20
        (out / "ro").chmod(0o755)
        outside = dest.exec(extract_command("/srv"), 10, stdin=[END_OF_ARCHIVE])
        assert outside.exit_status == 2 and b"inside the data root" in outside.stderr
        other = dest.exec(["tar", "-xf", "-", "-C", "/srv/ppo"], 10, stdin=[END_OF_ARCHIVE])
        assert other.exit_status == 2 and b"usage: tar --extract" in other.stderr


def test_timeout_wrapper_of_the_transport_is_honoured(app_lab: MiniLab) -> None:
    """``timeout D CMD`` (added by the SSH transport) answers 124 when CMD runs longer."""
    big = app_lab.client_dir(APP, "globex") / "files/sparse.bin"
    with big.open("wb") as handle:
        handle.truncate(400 << 20)  # sparse: costs no disk, still takes a while to hash
    try:
        slow = app_lab.ssh(
            APP, "timeout -k 5 0.01 sha256sum /srv/ppo/tenants/globex/files/sparse.bin"
        )
        assert slow.returncode == 124, slow.stderr
        assert "timed out after 0.01 s" in slow.stderr
        ok = app_lab.ssh(APP, "timeout --kill-after=5 30.000 du /srv/ppo/tenants/acme")
        assert ok.returncode == 0 and int(ok.stdout) > 0
        for bad in ("timeout 5", "timeout --signal=KILL 5 health", "timeout x health"):
            assert app_lab.ssh(APP, bad).returncode == 2, bad
    finally:
        big.unlink()


# ------------------------------------------------------------------------ the app


def test_health_and_server_header(app_lab: MiniLab) -> None:
    status, headers, body = http(app_lab, "GET", "/health")
    assert status == 200
    assert json.loads(body) == {"server": APP, "ok": True}
    assert headers["X-PPO-Server"] == APP
    status, headers, _b = http(app_lab, "GET", "/nowhere")
    assert status == 404 and headers["X-PPO-Server"] == APP


def test_acknowledged_journal_write_is_on_disk(app_lab: MiniLab) -> None:
    journal = app_lab.client_dir(APP, "globex") / "journal/journal.log"
    with journal.open("ab") as handle:
        handle.write(b'{"seq": 99, "ts": "torn')  # a crash mid-write left half a line
    status, headers, body = http(
        app_lab,
        "POST",
        "/c/globex/journal",
        {"seq": 100, "ts": "2026-01-01T00:00:00Z", "writer": "t"},
    )
    assert status == 200
    assert json.loads(body) == {"seq": 100, "server": APP}
    assert headers["X-PPO-Server"] == APP
    last = journal.read_bytes().splitlines()[-1]  # read by another process: it is on disk
    assert json.loads(last) == {
        "seq": 100,
        "ts": "2026-01-01T00:00:00Z",
        "writer": "t",
        "server": APP,
    }
    status, _h, body = http(app_lab, "GET", "/c/globex/journal?after=99")
    assert [r["seq"] for r in json.loads(body)] == [100]


@pytest.mark.parametrize(
    "body",
    [{"seq": "1", "ts": "t", "writer": "w"}, {"seq": -1, "ts": "t", "writer": "w"}, [1], "x"],
)
def test_malformed_journal_writes_are_refused(app_lab: MiniLab, body: Any) -> None:
    status, _h, _b = http(app_lab, "POST", "/c/acme/journal", body)
    assert status == 400


def test_client_page_and_health(app_lab: MiniLab) -> None:
    http(app_lab, "POST", "/c/acme/journal", {"seq": 7, "ts": "t<script>", "writer": "w"})
    status, headers, body = http(app_lab, "GET", "/c/acme/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"acme" in body and b"t&lt;script&gt;" in body and b"<script>" not in body
    status, _h, body = http(app_lab, "GET", "/c/acme/health")
    assert status == 200 and json.loads(body)["ok"] is True
    assert http(app_lab, "GET", "/c/initech/health")[0] == 404  # not in the fleet
    assert http(app_lab, "GET", "/c/BAD..id/health")[0] in (400, 404)


def test_clients_added_to_the_fleet_later_are_served(app_lab: MiniLab) -> None:
    assert http(app_lab, "GET", "/c/hooli/health")[0] == 404
    journal = app_lab.fs(APP) / "srv/ppo/tenants/hooli/journal"
    journal.mkdir(parents=True)
    (journal / "journal.log").write_text("")
    time.sleep(0.02)  # a visibly different mtime
    app_lab.write_fleet(extra_clients={"hooli": "tenants/hooli"})
    status, _h, body = http(app_lab, "GET", "/c/hooli/health")
    assert status == 200, body
    status, _h, _b = http(app_lab, "POST", "/c/hooli/journal", {"seq": 1, "ts": "t", "writer": "w"})
    assert status == 200


# ------------------------------------------------------------------------ faults and signals


def test_disk_fault_makes_health_fail_and_heal_restores_it(rt_fresh_minilab: MiniLab) -> None:
    lab = rt_fresh_minilab
    lab.start_server(APP)
    data_root = lab.fs(APP) / "srv/ppo"
    quarantine = lab.dir / "quarantine" / APP
    quarantine.parent.mkdir()
    data_root.rename(quarantine)
    status, _h, body = http(lab, "GET", "/health")
    assert status == 503 and json.loads(body)["ok"] is False
    status, _h, _b = http(lab, "POST", "/c/acme/journal", {"seq": 1, "ts": "t", "writer": "w"})
    assert status == 503
    assert json.loads(lab.ssh(APP, "health").stdout)["data_root_ok"] is False
    assert lab.ssh(APP, "df").returncode == 1
    quarantine.rename(data_root)
    assert http(lab, "GET", "/health")[0] == 200
    status, _h, _b = http(lab, "POST", "/c/acme/journal", {"seq": 2, "ts": "t", "writer": "w"})
    assert status == 200


def test_power_loss_restart_and_clean_shutdown(rt_fresh_minilab: MiniLab) -> None:
    lab = rt_fresh_minilab
    proc = lab.start_server(APP)
    assert http(lab, "POST", "/c/acme/journal", {"seq": 1, "ts": "t", "writer": "w"})[0] == 200
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)
    proc = lab.start_server(APP)  # same ports, same disk
    status, _h, body = http(lab, "GET", "/c/acme/journal")
    assert status == 200 and [r["seq"] for r in json.loads(body)] == [1]
    assert lab.ssh(APP, "health").returncode == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert "stopping" in lab.procs.log_of(APP)


def test_hang_accepts_but_does_not_answer(rt_fresh_minilab: MiniLab) -> None:
    lab = rt_fresh_minilab
    proc = lab.start_server(APP)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            urllib.request.urlopen(f"http://127.0.0.1:{lab.ports[APP]['http']}/health", timeout=1)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert http(lab, "GET", "/health")[0] == 200


def test_a_lab_of_servers_starts_quickly(rt_fresh_minilab: MiniLab) -> None:
    """Every role at once (mirrors have no HTTP): all listening within a few seconds."""
    lab = rt_fresh_minilab
    started = time.monotonic()
    procs = {sid: lab.procs.start("server", lab.config_path(sid), name=sid) for sid in lab.ports}
    for sid, ports in lab.ports.items():
        for port in ports.values():
            wait_for_port(port, procs[sid], lab.procs.logs / f"{sid}.log")
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"{len(procs)} servers took {elapsed:.1f} s"
    mirror = json.loads(lab.ssh("mirror-jhb1-1", "health").stdout)
    mirror.pop("time")
    assert mirror == {"server": "mirror-jhb1-1", "role": "mirror", "data_root_ok": True}
    assert "http none" in lab.procs.log_of("mirror-jhb1-1")
