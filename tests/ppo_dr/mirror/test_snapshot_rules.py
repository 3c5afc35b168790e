"""Snapshot rules: quick check, files that move while read, hooks, a missing client dir."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from ppo_dr.errors import UnsafeInputError
from ppo_dr.mirror.api import ClientSource, list_snapshots, snapshot_server
from ppo_dr.transport import LocalRemote
from tests.ppo_dr.mirror.helpers import T0, local_target

pytestmark = pytest.mark.timeout(60)


def test_quick_check_reads_only_changed_files_and_sends_only_new_blobs(tmp_path: Path) -> None:
    src = tmp_path / "src" / "c1"
    src.mkdir(parents=True)
    for i in range(20):
        (src / f"f{i}").write_bytes(os.urandom(20_000))
    (src / "big").write_bytes(os.urandom(3_000_000))
    targets = [local_target(tmp_path, "m1"), local_target(tmp_path, "m2")]
    client = [ClientSource("c1", str(src))]
    first = snapshot_server(LocalRemote(), "app1", client, targets, taken_at=T0)[0]
    assert first.files_changed == 21 and first.bytes_read == 3_400_000
    with (src / "big").open("ab") as f:
        f.write(os.urandom(1000))
    os.utime(src / "big", (1, 1))
    os.utime(src / "f3", (1, 1))  # touched, same content: read, but no new blob
    second = snapshot_server(
        LocalRemote(), "app1", client, targets, taken_at=T0 + timedelta(hours=1)
    )[0]
    assert second.files_scanned == 21 and second.files_changed == 2
    for outcome in second.per_mirror.values():
        assert outcome.ok and outcome.snapshot_written
        assert 1 <= outcome.new_chunks <= 3  # the tail of "big" only
        assert outcome.bytes_sent < 2_500_000
    assert second.snapshot_id == "2026-11-30T06-00-00Z"


def test_a_file_that_keeps_changing_is_reread_then_flagged(tmp_path: Path) -> None:
    src = tmp_path / "src" / "c1"
    src.mkdir(parents=True)
    busy = src / "growing.log"
    busy.write_bytes(os.urandom(2_000_000))
    (src / "calm").write_bytes(b"calm")
    # A writer in another process (a thread would share the GIL with the reader and,
    # on a loaded machine, could sit still for a whole read and make the file look calm).
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "with open(sys.argv[1], 'ab', buffering=0) as f:\n"
            "    while True:\n"
            "        f.write(b'x' * 512)\n",
            str(busy),
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while busy.stat().st_size == 2_000_000 and time.monotonic() < deadline:
            time.sleep(0.01)  # writing has started
        result = snapshot_server(
            LocalRemote(),
            "app1",
            [ClientSource("c1", str(src))],
            [local_target(tmp_path, "m1")],
            taken_at=T0,
        )[0]
    finally:
        writer.kill()
        writer.wait()
    assert result.changed_during_read == ["growing.log"]
    assert result.per_mirror["m1"].ok
    assert result.bytes_read > 3 * 2_000_000  # read three times


def test_failed_hook_or_missing_dir_skips_that_client_only(tmp_path: Path) -> None:
    good = tmp_path / "src" / "good"
    good.mkdir(parents=True)
    (good / "a").write_text("a")
    target = local_target(tmp_path, "m1")
    calls: list[str] = []

    def hook(client_id: str) -> None:
        calls.append(client_id)
        if client_id == "dumpfails":
            raise RuntimeError("pg_dump exited 1")

    clients = [
        ClientSource("dumpfails", str(good)),
        ClientSource("nodir", str(tmp_path / "src" / "missing")),
        ClientSource("good", str(good)),
    ]
    results = {
        r.client_id: r
        for r in snapshot_server(LocalRemote(), "app1", clients, [target], taken_at=T0, hook=hook)
    }
    assert calls == ["dumpfails", "nodir", "good"]
    assert "pg_dump exited 1" in (results["dumpfails"].per_mirror["m1"].error or "")
    assert not results["nodir"].per_mirror["m1"].ok
    assert results["good"].per_mirror["m1"].ok
    assert [s.client_id for s in list_snapshots(target)] == ["good"]


def test_relative_client_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeInputError):
        snapshot_server(
            LocalRemote(),
            "app1",
            [ClientSource("c1", "relative/dir")],
            [local_target(tmp_path, "m1")],
            taken_at=T0,
        )
