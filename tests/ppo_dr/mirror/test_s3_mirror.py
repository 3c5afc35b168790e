"""The off-site mirror in object storage: a real snapshot to an S3Remote (moto's server,
the real boto3 client) and a LocalRemote at once, then verify and restore from S3 alone.

Fixtures come from the ``tests.s3`` plugin; everything stays on 127.0.0.1.
"""

from __future__ import annotations

import functools
import os
from datetime import timedelta
from pathlib import Path

import pytest

from ppo_dr.mirror.api import (
    ClientSource,
    MirrorTarget,
    list_snapshots,
    restore,
    snapshot_server,
    verify,
)
from ppo_dr.mirror.errors import RepositoryLocked
from ppo_dr.mirror.lock import RepositoryLock
from ppo_dr.transport import LocalRemote
from ppo_dr.transport.s3 import S3Remote
from tests.ppo_dr.mirror.helpers import T0, local_target, tree_state
from tests.s3 import S3_KEY_ID, S3_REGION, S3_SECRET, RemoteFactory

pytestmark = pytest.mark.timeout(120)

KEY = b"s" * 32
BIG = 3_000_000  # above the small-file limit: cut by FastCDC into several blobs


def build_source(root: Path) -> None:
    """Regular files (tiny, empty, large and incompressible, odd names), directories
    with their own modes and mtimes, an empty directory, and symlinks."""
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "docs" / "ünï côdé\nnewline.txt").write_bytes(b"odd name\n")
    (root / "docs" / "deep" / "big.bin").write_bytes(os.urandom(BIG))
    (root / "docs" / "notes.md").write_text("# notes\n" * 200)
    (root / "zero").write_bytes(b"")
    (root / "docs" / "link").symlink_to("../elsewhere/target")
    (root / "abs-link").symlink_to("/etc/hostname")
    modes = {
        "docs/ünï côdé\nnewline.txt": 0o640,
        "docs/deep/big.bin": 0o600,
        "docs/notes.md": 0o644,
        "zero": 0o444,
        "docs/deep": 0o750,
        "docs": 0o755,
        "empty": 0o700,
    }
    for i, (rel, mode) in enumerate(modes.items()):  # children first: dir mtimes stick
        (root / rel).chmod(mode)
        os.utime(root / rel, (1_700_000_000 + i, 1_700_000_000 + i))


def s3_keys(remote: S3Remote) -> list[str]:
    paginator = remote._client.get_paginator("list_objects_v2")
    return [
        obj["Key"]
        for page in paginator.paginate(Bucket=remote.bucket)
        for obj in page.get("Contents", [])
    ]


def test_snapshot_to_s3_and_local_then_verify_and_restore_from_s3_alone(
    make_s3_remote: RemoteFactory, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "app" / "c1"
    build_source(src)
    s3 = make_s3_remote(s3_bucket, prefix="offsite")
    offsite = MirrorTarget("offsite", s3, "/repos/app1")
    onsite = local_target(tmp_path, "onsite")
    clients = [ClientSource("c1", str(src))]

    first = snapshot_server(LocalRemote(), "app1", clients, [offsite, onsite], key=KEY, taken_at=T0)
    out = first[0].per_mirror
    assert out["offsite"].ok and out["onsite"].ok, out
    assert out["offsite"].bytes_sent > BIG
    assert first[0].files_changed == 4

    # Only repository objects in the bucket: no file names, no symlinks, no temporaries,
    # and the lock was released.
    keys = s3_keys(s3)
    assert keys and all(k.startswith("offsite/repos/app1/") for k in keys)
    tops = {k.removeprefix("offsite/repos/app1/").split("/")[0] for k in keys}
    assert tops == {"config.json", "packs", "index", "snapshots"}
    assert not any(".ppo-tmp-" in k or "newline" in k or "link" in k for k in keys)

    report = verify(offsite, key=KEY, read_data=True)
    assert report.ok, report.problems
    assert report.packs_checked >= 1 and report.bytes_checked > BIG
    assert [s.files for s in list_snapshots(offsite, "c1", key=KEY)] == [4]

    dest = tmp_path / "restored"
    result = restore([offsite], "c1", "latest", LocalRemote(), str(dest), key=KEY)
    assert result.refused == [] and result.files == 4
    assert result.served_by == {"offsite": result.served_by["offsite"]}
    assert result.served_by["offsite"] > 0
    assert tree_state(dest) == tree_state(src)  # bytes, modes, mtimes, links, empty dir
    assert (dest / "docs" / "link").readlink() == Path("../elsewhere/target")

    # An hourly incremental: one small edit, one append to the large file.
    (src / "docs" / "notes.md").write_text("# notes, edited\n")
    with (src / "docs" / "deep" / "big.bin").open("ab") as f:
        f.write(b"appended" * 100)
    second = snapshot_server(
        LocalRemote(), "app1", clients, [offsite, onsite], key=KEY, taken_at=T0 + timedelta(hours=1)
    )
    again = second[0].per_mirror["offsite"]
    assert again.ok and second[0].files_changed == 2
    assert again.bytes_sent < out["offsite"].bytes_sent // 4, (again, out["offsite"])
    assert verify(offsite, key=KEY, read_data=True).ok
    dest2 = tmp_path / "restored-2"
    restore([offsite], "c1", "latest", LocalRemote(), str(dest2), key=KEY)
    assert tree_state(dest2) == tree_state(src)


def test_uploads_from_a_child_process_with_its_own_s3_client(
    make_s3_remote: RemoteFactory, s3_bucket: str, moto_s3_endpoint: str, tmp_path: Path
) -> None:
    """``MirrorTarget.connect`` as a picklable S3Remote factory: packs go up from a
    separate process, as they do for SSH mirrors."""
    src = tmp_path / "app" / "c1"
    build_source(src)
    connect = functools.partial(
        S3Remote,
        s3_bucket,
        prefix="offsite",
        region=S3_REGION,
        endpoint_url=moto_s3_endpoint,  # 127.0.0.1: the child stays on loopback too
        access_key_id=S3_KEY_ID,
        secret_access_key=S3_SECRET,
    )
    offsite = MirrorTarget("offsite", make_s3_remote(s3_bucket, prefix="offsite"), "/r", connect)
    results = snapshot_server(
        LocalRemote(), "app1", [ClientSource("c1", str(src))], [offsite], key=KEY, taken_at=T0
    )
    assert results[0].per_mirror["offsite"].ok, results[0].per_mirror
    assert verify(offsite, key=KEY, read_data=True).ok
    dest = tmp_path / "restored"
    restore([offsite], "c1", "latest", LocalRemote(), str(dest), key=KEY)
    assert tree_state(dest) == tree_state(src)


def test_a_failing_s3_mirror_does_not_stop_the_local_one(
    make_s3_remote: RemoteFactory, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "app" / "c1"
    build_source(src)
    broken = MirrorTarget("offsite", make_s3_remote("no-such-bucket-anywhere"), "/repos/app1")
    onsite = local_target(tmp_path, "onsite")
    results = snapshot_server(
        LocalRemote(), "app1", [ClientSource("c1", str(src))], [broken, onsite], taken_at=T0
    )
    outcome = results[0].per_mirror
    assert outcome["onsite"].ok
    assert not outcome["offsite"].ok and "no such bucket" in (outcome["offsite"].error or "")


def test_the_repository_lock_holds_on_s3(make_s3_remote: RemoteFactory, s3_bucket: str) -> None:
    """The lock is created by a rename that never clobbers: on S3 that is the
    ``If-None-Match: *`` copy, so a second writer (another client, same bucket) loses."""
    first = make_s3_remote(s3_bucket, prefix="offsite")
    second = make_s3_remote(s3_bucket, prefix="offsite")
    with RepositoryLock(first, "/repos/app1", "snapshot", owner="app1"):
        with pytest.raises(RepositoryLocked, match="locked by app1"):
            RepositoryLock(second, "/repos/app1", "prune", owner="app1").acquire()
        assert first.stat("/repos/app1/locks/lock") is not None
    assert first.stat("/repos/app1/locks/lock") is None
    assert not any(".ppo-tmp-" in k for k in s3_keys(first))
