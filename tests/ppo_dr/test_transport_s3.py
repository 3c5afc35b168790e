"""S3Remote: the Remote contract with the real boto3 client against moto's server, and
the error mapping against a stand-in endpoint that answers AWS error XML.

Fixtures come from the ``tests.s3`` plugin; everything stays on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import posixpath
import socket
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

from ppo_dr import errors
from ppo_dr.transport import EntryType, LocalRemote
from ppo_dr.transport.s3 import S3Remote
from tests.s3 import S3_KEY_ID, S3_REGION, S3_SECRET, AwsErrors, RemoteFactory

pytestmark = pytest.mark.timeout(60)

# Real S3 takes "\n" in keys; moto's server (werkzeug routing) answers 404 to one.
ODD = "a b  c é 日本 (1).txt"


@pytest.fixture
def s3(make_s3_remote: RemoteFactory, s3_bucket: str) -> S3Remote:
    """An S3Remote on a fresh bucket, below a prefix (so keys are namespaced)."""
    return make_s3_remote(s3_bucket, prefix="dr/offsite")


def keys(remote: S3Remote) -> list[str]:
    answer = remote._client.list_objects_v2(Bucket=remote.bucket)
    return sorted(o["Key"] for o in answer.get("Contents", []))


# --------------------------------------------------------------------------- contract


def test_write_read_stat_under_the_prefix(s3: S3Remote) -> None:
    before = int(time.time()) - 5
    s3.write_bytes("/repo/config.json", b"{}\n", 0o600)
    s3.write_bytes(f"/repo/{ODD}", b"odd")

    assert keys(s3) == [f"dr/offsite/repo/{ODD}", "dr/offsite/repo/config.json"]
    assert s3.read_bytes("/repo/config.json") == b"{}\n"
    assert s3.read_bytes(f"/repo/{ODD}") == b"odd"
    st = s3.stat("/repo/config.json")
    assert st is not None
    assert (st.path, st.type, st.size, st.mode) == ("/repo/config.json", EntryType.FILE, 3, 0o600)
    assert before <= st.mtime <= time.time() + 5
    repo = s3.stat("/repo")
    assert repo is not None and repo.type is EntryType.DIR
    root = s3.stat("/")
    assert root is not None and root.type is EntryType.DIR
    assert s3.stat("/repo/missing") is None
    assert s3.stat("/nothing/here") is None
    assert s3.label == f"s3://{s3.bucket}/dr/offsite"


def test_listdir_and_walk_see_prefixes_as_directories(s3: S3Remote, tmp_path: Path) -> None:
    for path in ("/r/b/x", "/r/b/c/y", "/r/a", f"/r/{ODD}", "/r/z/deep/er/f"):
        s3.write_bytes(path, path.encode())

    listed = s3.listdir("/r")
    assert [(e.path, e.type) for e in listed] == [
        ("/r/a", EntryType.FILE),
        (f"/r/{ODD}", EntryType.FILE),
        ("/r/b", EntryType.DIR),
        ("/r/z", EntryType.DIR),
    ]
    assert listed[0].size == len(b"/r/a")

    walked = [(e.path, e.type) for e in s3.walk("/r")]
    # The order LocalRemote and SshRemote walk in: a directory's entries, then each
    # sub-directory's in turn.
    assert walked == [
        ("a", EntryType.FILE),
        (ODD, EntryType.FILE),
        ("b", EntryType.DIR),
        ("z", EntryType.DIR),
        ("b/c", EntryType.DIR),
        ("b/x", EntryType.FILE),
        ("b/c/y", EntryType.FILE),
        ("z/deep", EntryType.DIR),
        ("z/deep/er", EntryType.DIR),
        ("z/deep/er/f", EntryType.FILE),
    ]
    local = tmp_path / "r"
    for path in ("b/x", "b/c/y", "a", ODD, "z/deep/er/f"):
        (local / path).parent.mkdir(parents=True, exist_ok=True)
        (local / path).write_bytes(b"x")
    assert walked == [(e.path, e.type) for e in LocalRemote().walk(str(local))]
    # Parents before children, as the SSH and local walks promise.
    seen: set[str] = set()
    for path, _type in walked:
        parent = posixpath.dirname(path)
        assert not parent or parent in seen
        seen.add(path)

    # mkdir_p is a no-op: an empty directory lists empty, stats absent.
    s3.mkdir_p("/r/empty/sub", 0o700)
    assert s3.listdir("/r/empty/sub") == []
    assert s3.stat("/r/empty") is None
    assert list(s3.walk("/r/empty")) == []
    with pytest.raises(errors.RemotePathError, match="not a directory"):
        s3.listdir("/r/a")


def test_open_write_commits_whole_or_not_at_all(s3: S3Remote) -> None:
    s3.write_bytes("/f", b"old")
    with s3.open_write("/f", 0o600) as writer:
        assert writer.temp_path == writer.final_path == "/f"  # PUT to the final key
        writer.write(b"new ")
        assert s3.read_bytes("/f") == b"old"  # nothing visible before commit
        writer.write(b"content")
    assert s3.read_bytes("/f") == b"new content"

    with pytest.raises(RuntimeError), s3.open_write("/f") as writer:
        writer.write(b"half")
        raise RuntimeError("crash mid-write")
    assert s3.read_bytes("/f") == b"new content"

    writer = s3.open_write("/g")  # abort then leave normally: restore.py does this
    with writer:
        writer.write(b"x")
        writer.abort()
    assert s3.stat("/g") is None
    assert keys(s3) == ["dr/offsite/f"]


def test_exclusive_create_and_rename_never_clobber(s3: S3Remote) -> None:
    s3.write_bytes("/locks/lock", b"holder-1")
    with pytest.raises(errors.RemotePathError, match="exists"):
        s3.write_bytes("/locks/lock", b"holder-2", exclusive=True)
    s3.write_bytes("/locks/other", b"fresh", exclusive=True)

    s3.write_bytes("/locks/.ppo-tmp-1.lock", b"holder-2")
    with pytest.raises(errors.RemotePathError, match="exists"):
        s3.rename("/locks/.ppo-tmp-1.lock", "/locks/lock")
    assert s3.read_bytes("/locks/lock") == b"holder-1"
    assert s3.read_bytes("/locks/.ppo-tmp-1.lock") == b"holder-2"  # source kept

    s3.remove("/locks/lock")
    s3.rename("/locks/.ppo-tmp-1.lock", "/locks/lock")
    assert s3.read_bytes("/locks/lock") == b"holder-2"
    assert s3.stat("/locks/.ppo-tmp-1.lock") is None

    s3.write_bytes("/locks/.ppo-tmp-2.x", b"replacement")
    s3.rename_into_place("/locks/.ppo-tmp-2.x", "/locks/lock")  # replaces
    assert s3.read_bytes("/locks/lock") == b"replacement"
    assert s3.stat("/locks/.ppo-tmp-2.x") is None
    with pytest.raises(errors.RemotePathError, match="no such file"):
        s3.rename("/locks/missing", "/locks/elsewhere")


def test_of_racing_renames_onto_one_name_exactly_one_wins(s3: S3Remote) -> None:
    racers = 8
    for i in range(racers):
        s3.write_bytes(f"/l/.ppo-tmp-{i}.lock", f"holder-{i}".encode())
    barrier = threading.Barrier(racers)

    def race(i: int) -> bool:
        barrier.wait()
        try:
            s3.rename(f"/l/.ppo-tmp-{i}.lock", "/l/lock")
            return True
        except errors.RemotePathError:
            return False

    with ThreadPoolExecutor(racers) as pool:
        won = list(pool.map(race, range(racers)))
    assert won.count(True) == 1
    assert s3.read_bytes("/l/lock") == f"holder-{won.index(True)}".encode()


def test_ranged_reads_fetch_only_the_slice(s3: S3Remote) -> None:
    data = os.urandom(300_000)
    s3.write_bytes("/packs/ab/pack", data)
    ranges: list[str] = []
    s3._client.meta.events.register(
        "provide-client-params.s3.GetObject",
        lambda params, **_: ranges.append(params.get("Range")),
    )

    assert s3.read_range("/packs/ab/pack", 1000, 5000) == data[1000:6000]
    assert s3.read_range("/packs/ab/pack", 299_990, 100) == data[299_990:]  # short at the end
    with s3.open_read("/packs/ab/pack", offset=250_000) as reader:
        assert reader.read(10) == data[250_000:250_010]
        buffer = bytearray(20)
        assert reader.readinto(buffer) == 20 and bytes(buffer) == data[250_010:250_030]
        assert reader.read() == data[250_030:]
    with s3.open_read("/packs/ab/pack") as reader:
        assert reader.read(7) + reader.read() == data
    assert s3.read_range("/packs/ab/pack", 5, 0) == b""
    assert ranges == ["bytes=1000-5999", "bytes=299990-300089", "bytes=250000-", None]
    with pytest.raises(errors.RemotePathError, match="range"):
        s3.read_range("/packs/ab/pack", 400_000, 10)


def test_a_large_object_goes_up_in_parts(make_s3_remote: RemoteFactory, s3_bucket: str) -> None:
    mib = 1024 * 1024
    s3 = make_s3_remote(s3_bucket, multipart_threshold=5 * mib, part_size=5 * mib)
    data = os.urandom(12 * mib + 123)
    with s3.open_write("/big") as writer:
        for start in range(0, len(data), 700_000):  # odd write sizes, as packs are
            writer.write(data[start : start + 700_000])
    head = s3._client.head_object(Bucket=s3_bucket, Key="big")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of 3 parts
    assert s3.read_bytes("/big") == data
    assert s3.read_range("/big", 11 * mib, 16) == data[11 * mib : 11 * mib + 16]
    # An exclusive multipart upload loses cleanly against an existing key.
    with (
        pytest.raises(errors.RemotePathError, match="exists"),
        s3.open_write("/big", exclusive=True) as w,
    ):
        w.write(data)
    assert s3._client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_listing_follows_pagination_past_1000_keys(s3: S3Remote) -> None:
    n = 1_050
    client = s3._client
    # Filled through moto's backend (it runs in this process): 1,050 PUTs over HTTP
    # would take seconds and test nothing the other tests do not.
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for i in range(n):
        backend.put_object(s3.bucket, f"dr/offsite/many/k{i:05d}", b"x")
    s3.write_bytes("/many/sub/one", b"1")
    calls: list[int] = []
    client.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: calls.append(1))

    listed = s3.listdir("/many")
    assert len(listed) == n + 1
    assert listed[0].path == "/many/k00000" and listed[-1].path == "/many/sub"
    assert len(calls) == 2  # two pages of at most 1,000
    walked = list(s3.walk("/many"))
    assert len(walked) == n + 2  # the files, "sub" and "sub/one"
    assert len(calls) == 4


def test_remove_and_rmdir_keep_posix_refusals(s3: S3Remote) -> None:
    s3.write_bytes("/d/f", b"x")
    with pytest.raises(errors.RemotePathError, match="no such file"):
        s3.remove("/d/missing")
    with pytest.raises(errors.RemotePathError, match="is a directory"):
        s3.remove("/d")
    with pytest.raises(errors.RemotePathError, match="not empty"):
        s3.rmdir("/d")
    with pytest.raises(errors.RemotePathError, match="not a directory"):
        s3.rmdir("/d/f")
    s3.remove("/d/f")
    assert s3.stat("/d/f") is None
    s3.rmdir("/d")  # nothing below it: fine
    assert keys(s3) == []


def test_what_object_storage_cannot_do_is_a_permanent_error(s3: S3Remote) -> None:
    s3.write_bytes("/f", b"x")
    for call in (
        lambda: s3.symlink("target", "/link"),
        lambda: s3.readlink("/f"),
        lambda: s3.exec(["pg_dump", "db"], timeout=5),
    ):
        with pytest.raises(errors.PermanentError) as caught:
            call()
        assert not errors.is_retryable(caught.value)
    s3.chmod("/f", 0o644)  # no-ops on what exists (objects have no mode or settable mtime)
    s3.utime("/f", 1_700_000_000)
    with pytest.raises(errors.RemotePathError):
        s3.chmod("/missing", 0o644)
    s3.write_bytes("/../../escape", b"clamped")  # ".." stops at the prefix
    assert s3._client.get_object(Bucket=s3.bucket, Key="dr/offsite/escape")["Body"].read()
    with pytest.raises(errors.UnsafeInputError):
        s3.write_bytes("/bad-\udcff-name", b"x")
    s3.close()
    with pytest.raises(errors.PermanentError, match="closed"):
        s3.stat("/f")


# --------------------------------------------------------------------------- error mapping


def test_missing_key_and_missing_bucket_are_path_errors(
    s3: S3Remote, make_s3_remote: RemoteFactory
) -> None:
    with pytest.raises(errors.RemotePathError, match="no such file"):
        s3.read_bytes("/nope")
    with pytest.raises(errors.RemotePathError, match="no such file"):
        s3.open_read("/nope", offset=3, length=2)
    gone = make_s3_remote("no-such-bucket-here")
    for call in (
        lambda: gone.stat("/x"),
        lambda: gone.stat("/"),
        lambda: gone.listdir("/"),
        lambda: gone.read_bytes("/x"),
        lambda: gone.write_bytes("/x", b"1"),
        lambda: list(gone.walk("/")),
    ):
        with pytest.raises(errors.RemotePathError, match="no such bucket") as caught:
            call()
        assert not errors.is_retryable(caught.value)


def stand_in(endpoint: AwsErrors, **overrides: Any) -> S3Remote:
    args: dict[str, Any] = {
        "region": S3_REGION,
        "endpoint_url": endpoint.url,
        "access_key_id": S3_KEY_ID,
        "secret_access_key": S3_SECRET,
        "connect_timeout": 1.0,
        "read_timeout": 1.0,
        "max_attempts": 1,
    }
    args.update(overrides)
    return S3Remote("bucket", **args)


def assert_no_credentials(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    assert S3_KEY_ID not in text and S3_SECRET not in text


@pytest.mark.parametrize(
    ("status", "code"),
    [(403, "InvalidAccessKeyId"), (403, "SignatureDoesNotMatch"), (403, "AccessDenied")],
)
def test_refused_credentials_are_auth_errors_without_the_key(
    s3_error_endpoint: AwsErrors, status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    s3_error_endpoint.status, s3_error_endpoint.code = status, code
    remote = stand_in(s3_error_endpoint)
    for call in (
        lambda: remote.read_bytes("/x"),
        lambda: remote.write_bytes("/x", b"data"),
        lambda: remote.listdir("/"),
        lambda: remote.stat("/x"),  # a HEAD: a bare 403, no body
    ):
        with pytest.raises(errors.AuthError) as caught:
            call()
        assert not errors.is_retryable(caught.value)
        assert caught.value.__cause__ is None
        assert_no_credentials(caught.value)
    assert S3_SECRET not in caplog.text


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "SlowDown"), (500, "InternalError"), (400, "RequestTimeout"), (400, "Throttling")],
)
def test_throttling_and_server_errors_are_transient(
    s3_error_endpoint: AwsErrors, status: int, code: str
) -> None:
    s3_error_endpoint.status, s3_error_endpoint.code = status, code
    remote = stand_in(s3_error_endpoint)
    for call in (lambda: remote.read_bytes("/x"), lambda: remote.write_bytes("/x", b"d")):
        with pytest.raises(errors.TransientError, match=code) as caught:
            call()
        assert errors.is_retryable(caught.value)
        assert_no_credentials(caught.value)


def test_botocore_retries_a_slowdown_a_few_times_then_gives_up(
    s3_error_endpoint: AwsErrors,
) -> None:
    remote = stand_in(s3_error_endpoint, max_attempts=2)
    with pytest.raises(errors.TransientError):
        remote.read_bytes("/x")
    assert len(s3_error_endpoint.requests) == 2


def test_a_hung_endpoint_times_out_as_transient(s3_error_endpoint: AwsErrors) -> None:
    s3_error_endpoint.hang = True
    remote = stand_in(s3_error_endpoint, read_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(errors.TransientError, match="network error") as caught:
        remote.read_bytes("/x")
    assert time.monotonic() - started < 5
    assert_no_credentials(caught.value)


def test_a_refused_connection_is_transient(s3_loopback_only: list[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        remote = S3Remote(
            "bucket",
            region=S3_REGION,
            endpoint_url=f"http://127.0.0.1:{port}",
            access_key_id=S3_KEY_ID,
            secret_access_key=S3_SECRET,
            connect_timeout=0.5,
            max_attempts=1,
        )
        with pytest.raises(errors.TransientError) as caught:
            remote.stat("/x")
    assert isinstance(caught.value, errors.DRError)
    assert_no_credentials(caught.value)


def test_half_given_credentials_are_refused_up_front() -> None:
    with pytest.raises(errors.AuthError, match="neither"):
        S3Remote("bucket", region=S3_REGION, access_key_id=S3_KEY_ID)


def test_importing_the_transport_package_does_not_import_boto3() -> None:
    code = (
        "import sys, ppo_dr.transport as t\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules\n"
        "assert t.S3Remote.__name__ == 'S3Remote' and 'boto3' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
