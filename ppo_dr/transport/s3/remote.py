"""A bucket (below a prefix) as a :class:`~ppo_dr.transport.base.Remote`: metadata
from listings, content by GET/PUT, renames by server-side copy."""

from __future__ import annotations

import contextlib
import logging
import posixpath
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import boto3
from botocore.exceptions import ClientError

from ppo_dr.aws_clients import chain_for, client_config
from ppo_dr.errors import AuthError, DRError, PermanentError, RemotePathError, UnsafeInputError
from ppo_dr.transport.base import EntryType, ExecResult, Remote, RemoteBase, RemoteStat
from ppo_dr.transport.s3.files import S3AtomicWriter, S3Reader
from ppo_dr.transport.s3.translate import NOT_FOUND_CODES, translate_error

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
MAX_ATTEMPTS = 3  # botocore "standard" mode: total attempts, first one included
MULTIPART_THRESHOLD = 64 * 1024 * 1024  # a 16 MiB pack is one PUT
PART_SIZE = 32 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's floor for every part but the last
MAX_COPY_PART = 1024 * 1024 * 1024  # UploadPartCopy allows 5 GiB; smaller keeps retries cheap
LIST_PAGE = 1000  # S3's own maximum per ListObjectsV2 page


@dataclass
class _Listing:
    """One directory level: files (key name -> (size, mtime)) and sub-directories."""

    files: dict[str, tuple[int, int]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)


def _sort_key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class S3Remote(RemoteBase):
    """A bucket (below *prefix*) behind the Remote contract; see the module docstring.

    Credentials come from the arguments, else from boto3's default chain (instance
    role, environment). *client* injects a ready boto3 S3 client (then the caller
    closes it). Thread-safe: boto3 clients are, and this class keeps no other state.
    Picklable as a ``functools.partial(S3Remote, ...)`` factory for
    ``MirrorTarget.connect``, since each call builds its own client.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        region: str,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        client: Any = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
    ) -> None:
        if not bucket or "/" in bucket:
            raise UnsafeInputError(f"invalid bucket name {bucket!r}")
        if (access_key_id is None) != (secret_access_key is None):
            raise AuthError(f"s3://{bucket}: give access_key_id and secret_access_key, or neither")
        if part_size < MIN_PART_SIZE or multipart_threshold < part_size:
            raise PermanentError(
                f"s3://{bucket}: part_size must be >= {MIN_PART_SIZE} and <= multipart_threshold"
            )
        self.bucket = bucket
        self._prefix = posixpath.normpath("/" + prefix).strip("/")
        self._label = f"s3://{bucket}/{self._prefix}" if self._prefix else f"s3://{bucket}"
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._closed = False
        self._own_client = client is None
        if client is None:
            config = client_config(
                region,
                connect_timeout,
                read_timeout,
                max_attempts,
                tcp_keepalive=True,
                # A custom endpoint (MinIO, moto, an IP) has no per-bucket DNS names.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
            )
            try:
                session = boto3.session.Session(
                    aws_access_key_id=access_key_id,
                    aws_secret_access_key=secret_access_key,
                    aws_session_token=session_token,
                    region_name=region,
                )
                client = session.client("s3", endpoint_url=endpoint_url, config=config)
            except Exception as exc:
                err = translate_error(exc, self._label, "connect")
                if err is None:
                    raise
                raise err from None
        self._client: Any = client

    # ----- bookkeeping -------------------------------------------------------------

    @property
    def label(self) -> str:
        """``s3://bucket/prefix`` (no endpoint credentials, no keys)."""
        return self._label

    @contextmanager
    def _op(self, what: str, path: str) -> Iterator[None]:
        """One S3 operation with its errors translated (the single boundary)."""
        if self._closed:
            raise PermanentError(f"{self._label}: {what} {path!r}: connection closed")
        try:
            yield
        except DRError:
            raise
        except Exception as exc:
            err = translate_error(exc, self._label, f"{what} {path!r}")
            if err is None:
                raise
            raise err from chain_for(exc, err)

    def _key(self, path: str) -> str:
        """The object key for POSIX *path* (no leading slash, below the prefix)."""
        if "\x00" in path:
            raise UnsafeInputError(f"{self._label}: path contains a NUL byte")
        inner = posixpath.normpath(posixpath.join("/", path)).lstrip("/")
        if inner == ".":
            inner = ""
        key = f"{self._prefix}/{inner}" if self._prefix and inner else (inner or self._prefix)
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise UnsafeInputError(
                f"{self._label}: path {path!r} is not valid UTF-8; S3 keys must be"
            ) from None
        return key

    def _dir_prefix(self, path: str) -> str:
        """The key prefix of everything inside directory *path* ("" for the bucket root)."""
        key = self._key(path)
        return f"{key}/" if key else ""

    def close(self) -> None:
        """Release the client's connection pool (if we made it); further calls fail."""
        if self._closed:
            return
        self._closed = True
        if self._own_client:
            with contextlib.suppress(Exception):
                self._client.close()

    # ----- metadata ----------------------------------------------------------------

    def _head(self, key: str) -> dict[str, Any] | None:
        """HEAD *key*; None if there is no such object (a bucket that is missing too
        is found by the LIST that follows, which names it)."""
        try:
            answer: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=key)
            return answer
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in NOT_FOUND_CODES:
                return None
            raise

    def _has_children(self, prefix: str) -> bool:
        answer = self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        return bool(answer.get("KeyCount", 0))

    def stat(self, path: str) -> RemoteStat | None:
        """An object (FILE) or a prefix with objects below it (DIR); None otherwise.

        The bucket root (or the *prefix*) always exists as a DIR if the bucket does.
        """
        key = self._key(path)
        with self._op("stat", path):
            if key == self._prefix:
                try:
                    self._client.head_bucket(Bucket=self.bucket)
                except ClientError as exc:  # a HEAD's 404 has no body to name the bucket
                    if str(exc.response.get("Error", {}).get("Code", "")) in NOT_FOUND_CODES:
                        raise RemotePathError(
                            f"{self._label}: stat {path!r}: no such bucket"
                        ) from exc
                    raise
                return RemoteStat(path, EntryType.DIR, DIR_MODE, 0, 0)
            head = self._head(key)
            if head is not None:
                return RemoteStat(
                    path,
                    EntryType.FILE,
                    FILE_MODE,
                    int(head["LastModified"].timestamp()),
                    int(head["ContentLength"]),
                )
            if self._has_children(key + "/"):
                return RemoteStat(path, EntryType.DIR, DIR_MODE, 0, 0)
            return None

    def _list(self, prefix: str, *, delimiter: bool) -> Iterator[dict[str, Any]]:
        """Every ListObjectsV2 page below *prefix* (continuation tokens followed)."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE}
        if delimiter:
            args["Delimiter"] = "/"
        paginator = self._client.get_paginator("list_objects_v2")
        yield from paginator.paginate(**args)

    def listdir(self, path: str) -> list[RemoteStat]:
        """Entries of directory *path*, sorted by (byte) name, each with its full path.

        A prefix with nothing below it is an empty directory (S3 cannot tell that from
        a missing one); an object at *path* itself is "not a directory".
        """
        prefix = self._dir_prefix(path)
        found: list[RemoteStat] = []
        with self._op("list", path):
            for page in self._list(prefix, delimiter=True):
                for sub in page.get("CommonPrefixes", []):
                    name = sub["Prefix"][len(prefix) :].rstrip("/")
                    if name:
                        found.append(
                            RemoteStat(posixpath.join(path, name), EntryType.DIR, DIR_MODE, 0, 0)
                        )
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(prefix) :]
                    if name:  # "" is a console-made "folder" marker: the dir itself
                        found.append(
                            RemoteStat(
                                posixpath.join(path, name),
                                EntryType.FILE,
                                FILE_MODE,
                                int(obj["LastModified"].timestamp()),
                                int(obj["Size"]),
                            )
                        )
            if not found and prefix and self._head(prefix[:-1]) is not None:
                raise RemotePathError(f"{self._label}: list {path!r}: not a directory")
        found.sort(key=lambda s: _sort_key(s.name))
        return found

    def walk(self, root: str) -> Iterator[RemoteStat]:
        """Pre-order walk below *root* (paths relative to it), parents before children.

        One flat listing (1,000 keys per request, not one request per directory); the
        directories are the prefixes the keys imply.
        """
        prefix = self._dir_prefix(root)
        tree: dict[str, _Listing] = {"": _Listing()}
        with self._op("walk", root):
            for page in self._list(prefix, delimiter=False):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(prefix) :]
                    if not rel or rel.endswith("/"):
                        # A folder marker: the directory exists, nothing to report as a file.
                        self._add_dirs(tree, rel.rstrip("/"))
                        continue
                    parent, name = posixpath.split(rel)
                    self._add_dirs(tree, parent)
                    tree[parent].files[name] = (
                        int(obj["Size"]),
                        int(obj["LastModified"].timestamp()),
                    )
        pending = [""]
        while pending:
            rel = pending.pop()
            listing = tree[rel]
            stats = [
                RemoteStat(posixpath.join(rel, d) if rel else d, EntryType.DIR, DIR_MODE, 0, 0)
                for d in listing.dirs
            ] + [
                RemoteStat(posixpath.join(rel, f) if rel else f, EntryType.FILE, FILE_MODE, m, s)
                for f, (s, m) in listing.files.items()
            ]
            stats.sort(key=lambda s: _sort_key(s.name))
            yield from stats
            pending.extend(reversed([s.path for s in stats if s.type is EntryType.DIR]))

    @staticmethod
    def _add_dirs(tree: dict[str, _Listing], rel_dir: str) -> None:
        """Make *rel_dir* and its ancestors known directories of *tree*."""
        child: str | None = None
        while True:
            listing = tree.get(rel_dir)
            created = listing is None
            if listing is None:
                listing = tree[rel_dir] = _Listing()
            if child is not None:
                listing.dirs.add(child)
            if not created or not rel_dir:
                return
            rel_dir, child = posixpath.split(rel_dir)

    # ----- content -----------------------------------------------------------------

    def open_read(
        self,
        path: str,
        size_hint: int | None = None,
        *,
        offset: int = 0,
        length: int | None = None,
    ) -> S3Reader:
        """Stream *path* from one GET; with *offset*/*length* only that byte range.

        *size_hint* is accepted for the Remote signature and not needed: a GET carries
        the length. A range past the end of the object is RemotePathError.
        """
        if offset < 0 or (length is not None and length < 0):
            raise UnsafeInputError(f"{self._label}: read {path!r}: negative offset or length")
        key = self._key(path)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if length == 0:
            with self._op("read", path):
                if self._head(key) is None:
                    raise RemotePathError(f"{self._label}: read {path!r}: no such file")
            return S3Reader(self, path, None)
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            args["Range"] = f"bytes={offset}-{end}"
        with self._op("open", path):
            answer = self._client.get_object(**args)
        return S3Reader(self, path, answer["Body"])

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """*length* bytes of *path* from *offset* (fewer at the end), in one Range GET."""
        with self.open_read(path, offset=offset, length=length) as reader:
            return reader.read()

    def open_write(
        self, path: str, mode: int = 0o644, *, exclusive: bool = False
    ) -> S3AtomicWriter:
        """Atomic write of *path*: spooled locally, uploaded to the final key on commit.

        *mode* is accepted for the Remote signature; objects have no mode (module doc).
        *exclusive* makes the upload conditional (``If-None-Match: *``).
        """
        return S3AtomicWriter(self, path, exclusive=exclusive)

    def write_bytes(
        self, path: str, data: bytes, mode: int = 0o644, *, exclusive: bool = False
    ) -> None:
        """Write *data* to *path* atomically: one PUT (multipart if large). Not the
        base's: *exclusive* (``If-None-Match: *``) is S3's alone."""
        with self.open_write(path, mode, exclusive=exclusive) as writer:
            writer.write(data)

    def _upload(self, key: str, path: str, body: IO[bytes], size: int, *, exclusive: bool) -> None:
        """PUT *body* to *key*, or upload it in parts if it is large."""
        cond = {"IfNoneMatch": "*"} if exclusive else {}
        with self._op("write", path):
            if size <= self._multipart_threshold:
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentLength=size, **cond
                )
                return

            def upload_parts(upload: dict[str, str]) -> list[dict[str, Any]]:
                parts = []
                number = 1
                while chunk := body.read(self._part_size):
                    answer = self._client.upload_part(**upload, PartNumber=number, Body=chunk)
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                    number += 1
                return parts

            self._multipart(key, upload_parts, exclusive=exclusive)

    def _multipart(
        self,
        key: str,
        upload_parts: Callable[[dict[str, str]], list[dict[str, Any]]],
        *,
        exclusive: bool,
    ) -> None:
        """Create a multipart upload of *key*, send its parts with *upload_parts* (given
        the upload's ``Bucket``, ``Key`` and ``UploadId``, the keywords every part call
        takes; returns the parts' numbers and ETags) and complete it, with
        ``If-None-Match: *`` if *exclusive*; abort it on any failure."""
        upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        upload = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id}
        try:
            parts = upload_parts(upload)
            self._client.complete_multipart_upload(
                **upload,
                MultipartUpload={"Parts": parts},
                **({"IfNoneMatch": "*"} if exclusive else {}),
            )
        except BaseException:
            self._abort_upload(key, upload_id)
            raise

    def _abort_upload(self, key: str, upload_id: str) -> None:
        """Best effort: parts of an unfinished upload cost storage until aborted (a
        bucket lifecycle rule "abort incomplete multipart uploads" is the backstop)."""
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception:
            log.debug("could not abort multipart upload of %s on %s", key, self._label)

    def _copy(self, src: str, dst: str, *, exclusive: bool) -> None:
        """Server-side copy of object *src* to *dst* (no bytes through us).

        Exclusive copies are multipart copies completed with ``If-None-Match: *``:
        CopyObject's own conditional header is not honoured everywhere, a completed
        multipart upload's is.
        """
        src_key, dst_key = self._key(src), self._key(dst)
        head = self._head(src_key)
        if head is None:
            raise RemotePathError(f"{self._label}: rename {src!r}: no such file")
        source = {"Bucket": self.bucket, "Key": src_key}
        size = int(head["ContentLength"])
        if not exclusive and size <= MAX_COPY_PART:
            self._client.copy_object(Bucket=self.bucket, Key=dst_key, CopySource=source)
            return

        def copy_parts(upload: dict[str, str]) -> list[dict[str, Any]]:
            parts = []
            starts = range(0, size, MAX_COPY_PART) if size else [0]
            for number, start in enumerate(starts, 1):
                args: dict[str, Any] = {}
                if size:
                    end = min(size, start + MAX_COPY_PART) - 1
                    args["CopySourceRange"] = f"bytes={start}-{end}"
                answer = self._client.upload_part_copy(
                    **upload, PartNumber=number, CopySource=source, **args
                )
                parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
            return parts

        self._multipart(dst_key, copy_parts, exclusive=exclusive)

    def rename_into_place(self, temp_path: str, final_path: str) -> None:
        """Replace *final_path* by *temp_path*: server-side copy, then delete the source.

        Not atomic as a pair (module doc); the copy itself is. Writers here need not
        call it: :meth:`open_write` already lands on the final key atomically.
        """
        with self._op("rename", f"{temp_path} -> {final_path}"):
            self._copy(temp_path, final_path, exclusive=False)
            self._client.delete_object(Bucket=self.bucket, Key=self._key(temp_path))

    # ----- namespace ---------------------------------------------------------------

    def mkdir_p(self, path: str, mode: int = 0o755) -> None:
        """Nothing to do: a directory is the prefix of the keys written into it."""
        self._key(path)  # still refuse a path that would leave the prefix

    def remove(self, path: str) -> None:
        """Delete object *path*; RemotePathError if there is none (S3's DELETE would
        succeed silently, the contract says a missing file is an error)."""
        key = self._key(path)
        with self._op("remove", path):
            if self._head(key) is None:
                what = "is a directory" if self._has_children(key + "/") else "no such file"
                raise RemotePathError(f"{self._label}: remove {path!r}: {what}")
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def rmdir(self, path: str) -> None:
        """Remove an empty directory: refuse if objects lie below it, else drop a
        folder marker if one exists (there is nothing else to remove)."""
        prefix = self._dir_prefix(path)
        with self._op("rmdir", path):
            if self._head(prefix[:-1]) is not None:
                raise RemotePathError(f"{self._label}: rmdir {path!r}: not a directory")
            for page in self._list(prefix, delimiter=False):
                if any(obj["Key"] != prefix for obj in page.get("Contents", [])):
                    raise RemotePathError(f"{self._label}: rmdir {path!r}: directory not empty")
            self._client.delete_object(Bucket=self.bucket, Key=prefix)

    def rename(self, src: str, dst: str) -> None:
        """Rename that never clobbers: a copy conditional on *dst* being absent
        (``If-None-Match: *``; RemotePathError if it exists), then delete *src*."""
        with self._op("rename", f"{src} -> {dst}"):
            self._copy(src, dst, exclusive=True)
            self._client.delete_object(Bucket=self.bucket, Key=self._key(src))

    def symlink(self, target: str, path: str) -> None:
        """Object storage has no symlinks (a mirror records them in its manifests)."""
        raise PermanentError(f"{self._label}: symlink {path!r}: object storage has no symlinks")

    def readlink(self, path: str) -> str:
        """Object storage has no symlinks."""
        raise PermanentError(f"{self._label}: readlink {path!r}: object storage has no symlinks")

    def _require(self, what: str, path: str) -> None:
        if self.stat(path) is None:
            raise RemotePathError(f"{self._label}: {what} {path!r}: no such file or directory")

    def chmod(self, path: str, mode: int) -> None:
        """No-op on an existing path: objects carry no POSIX mode (module doc)."""
        self._require("chmod", path)

    def utime(self, path: str, mtime: int, atime: int | None = None) -> None:
        """No-op on an existing path: S3 sets LastModified itself (module doc)."""
        self._require("utime", path)

    # ----- commands ----------------------------------------------------------------

    def exec(self, command: Sequence[str], timeout: float) -> ExecResult:
        """Object storage runs no commands: PermanentError (pre-snapshot hooks run on
        the app server, never on a mirror)."""
        raise PermanentError(f"{self._label}: exec: object storage runs no commands")


def _is_a_remote(remote: S3Remote) -> Remote:  # mypy proves the protocol is met
    return remote
