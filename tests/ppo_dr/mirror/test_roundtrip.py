"""snapshot -> restore reproduces any tree, on the local disk and through real sshd."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppo_dr.mirror.api import (
    ClientSource,
    MirrorTarget,
    ensure_repository,
    restore,
    snapshot_server,
    verify,
)
from ppo_dr.transport import LocalRemote
from ppo_dr.transport.ssh import SshRemote
from tests.ppo_dr.mirror.helpers import T0, local_target, tree_state
from tests.sshd import SshdServer

pytestmark = pytest.mark.timeout(120)

NAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in {".", ".."} and len(n.encode()) < 200)
CONTENT = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=1, max_size=2048).map(lambda b: b * 300),  # > small-file limit: CDC
    st.integers(300_000, 900_000).map(os.urandom),
)
MODE = st.sampled_from([0o644, 0o600, 0o755, 0o444, 0o700, 0o640])
MTIME = st.integers(0, 2**31 - 1)


@st.composite
def trees(draw: st.DrawFn) -> list[tuple[str, str, object, int, int]]:
    """(path, kind, payload, mode, mtime) parents first."""
    items: list[tuple[str, str, object, int, int]] = []
    dirs = [""]
    names: set[str] = set()
    for _ in range(draw(st.integers(0, 10))):
        parent = draw(st.sampled_from(dirs))
        name = draw(NAME)
        path = f"{parent}/{name}" if parent else name
        if path in names:
            continue
        names.add(path)
        kind = draw(st.sampled_from(["file", "file", "dir", "link"]))
        if kind == "dir":
            dirs.append(path)
            items.append(
                (path, "dir", None, draw(st.sampled_from([0o755, 0o700, 0o555])), draw(MTIME))
            )
        elif kind == "link":
            items.append(
                (path, "link", draw(st.sampled_from(["../x", "/etc/passwd", "a b\nc", name])), 0, 0)
            )
        else:
            items.append((path, "file", draw(CONTENT), draw(MODE), draw(MTIME)))
    return items


def build(root: Path, items: list[tuple[str, str, object, int, int]]) -> None:
    root.mkdir(parents=True)
    for path, kind, payload, _mode, _mtime in items:
        full = root / path
        if kind == "dir":
            full.mkdir()
        elif kind == "link":
            full.symlink_to(str(payload))
        else:
            assert isinstance(payload, bytes)
            full.write_bytes(payload)
    for path, kind, _payload, mode, mtime in reversed(items):  # children before parents
        if kind != "link":
            full = root / path
            full.chmod(mode)
            os.utime(full, (mtime, mtime))


def _rm(path: Path) -> None:
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            p = Path(dirpath) / d
            if not p.is_symlink():
                p.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=trees(), key=st.sampled_from([None, b"k" * 32]))
def test_any_tree_round_trips_on_local_disk(
    items: list[tuple[str, str, object, int, int]], key: bytes | None
) -> None:
    base = Path(tempfile.mkdtemp(prefix="mirror-prop-"))
    try:
        src = base / "src" / "c1"
        build(src, items)
        targets = [local_target(base, "m1"), local_target(base, "m2")]
        results = snapshot_server(
            LocalRemote(), "app1", [ClientSource("c1", str(src))], targets, key=key, taken_at=T0
        )
        assert all(o.ok for o in results[0].per_mirror.values())
        dest = base / "restored"
        result = restore(targets, "c1", "latest", LocalRemote(), str(dest), key=key)
        assert result.refused == []
        assert tree_state(dest) == tree_state(src)
    finally:
        _rm(base)


def _ssh(sshd: SshdServer) -> SshRemote:
    return SshRemote.connect(
        sshd.host, sshd.port, sshd.user, sshd.client_key, sshd.known_hosts, timeout=5.0
    )


def test_round_trip_through_real_sshd_to_two_mirrors(sshd: SshdServer, tmp_path: Path) -> None:
    items = [
        ("docs", "dir", None, 0o750, 1_700_000_000),
        ("docs/ünï côdé\nnewline", "file", b"x" * 10, 0o640, 1_700_000_001),
        ("docs/big", "file", os.urandom(3_000_000), 0o600, 1_700_000_002),
        ("docs/link", "link", "../elsewhere", 0, 0),
        ("empty", "dir", None, 0o700, 1_700_000_003),
        ("zero", "file", b"", 0o444, 1_700_000_004),
    ]
    src = tmp_path / "app" / "c1"
    build(src, items)
    root = sshd.data_root / tmp_path.name
    with _ssh(sshd) as source, _ssh(sshd) as m1, _ssh(sshd) as m2, _ssh(sshd) as dest:
        # m2 uploads from its own process over a second connection (the fast path).
        connect = functools.partial(
            SshRemote.connect, sshd.host, sshd.port, sshd.user, sshd.client_key, sshd.known_hosts
        )
        targets = [
            MirrorTarget("m1", m1, str(root / "m1" / "repos" / "app1")),
            MirrorTarget("m2", m2, str(root / "m2" / "repos" / "app1"), connect),
        ]
        key = b"s" * 32
        for target in targets:
            ensure_repository(target, app_server="app1", key=key)
        results = snapshot_server(
            source, "app1", [ClientSource("c1", str(src))], targets, key=key, taken_at=T0
        )
        outcome = results[0].per_mirror
        assert outcome["m1"].ok and outcome["m2"].ok
        assert outcome["m1"].bytes_sent > 3_000_000
        assert all(verify(t, key=key, read_data=True).ok for t in targets)
        out = root / "restored"
        result = restore(targets, "c1", results[0].snapshot_id, dest, str(out), key=key)
    assert result.files == 3 and result.refused == []
    assert tree_state(out) == tree_state(src)
