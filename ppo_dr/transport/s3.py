"""Object storage (S3, boto3) as a :class:`~ppo_dr.transport.base.Remote`: the off-site mirror.

It implements what the mirror repository needs, and says plainly where S3 cannot keep
the POSIX contract the SSH and local backends keep.

- **Keys.** A path is a POSIX path below the bucket's *prefix*: ``/repos/app1/x`` with
  prefix ``dr`` is the key ``dr/repos/app1/x``. ``..`` is resolved lexically and stops
  at the prefix (as :class:`~ppo_dr.transport.local.LocalRemote` with a root does), so
  no path reaches another prefix of a shared bucket.
  Keys must be valid UTF-8, so a name carrying surrogate escapes is refused.
- **Directories are prefixes.** ``stat`` of a key is a HEAD (a FILE); a path with objects
  below it is a DIR (one LIST of at most one key). ``mkdir_p`` is a no-op: S3 has no
  empty directories, so a directory that holds nothing lists as empty and stats as
  absent. The repository copes: it lists what it created and checks ``stat`` is None
  before reading a client folder. ``rmdir`` refuses a prefix with objects below it.
- **Writes are atomic without a rename.** A PUT (or a completed multipart upload)
  makes the whole object visible at once, or nothing: S3 has no partial objects. So
  :meth:`S3Remote.open_write` spools to a local temporary file and, on commit, PUTs
  straight to the final key; ``temp_path`` equals ``final_path`` and an aborted write
  never touches S3. Going through a temporary key would cost a second full copy and a
  delete per pack and buy nothing. The repository's write order (packs, then index,
  then the manifest last) stays safe because each of those PUTs is atomic and each
  starts only after the previous one returned: a crash leaves unreferenced packs at
  worst, never a manifest naming something missing.
- **No atomic rename.** S3 has none; :meth:`S3Remote.rename` and
  :meth:`S3Remote.rename_into_place` copy server-side, then delete the source. A
  reader sees the old object or the new one (the copy is one atomic write), but for a
  moment both names exist, and a crash between copy and delete leaves the source
  behind: for a ``.ppo-tmp-`` name that is exactly what the repository's sweep removes.
  :meth:`S3Remote.rename` never clobbers: the copy is a multipart copy completed with
  ``If-None-Match: *`` (S3 conditional writes, 2024), so of two racing renames onto one
  name exactly one wins, which is what the repository lock and config creation rely on.
  A store that ignores the header (old S3-compatible servers) would clobber silently;
  use AWS S3, MinIO >= 2024-11 or another store with conditional writes.
- **Metadata.** Objects carry no POSIX mode, owner or settable mtime. ``stat`` reports
  mode 0o600 for objects and 0o700 for prefixes (what the repository asks for) and
  ``mtime`` is the object's LastModified. ``chmod``/``utime`` check the path exists and
  otherwise do nothing: the modes and mtimes a restore applies come from the
  manifests, never from the mirror's objects, and rewriting metadata in S3 means
  copying the whole object.
- **No symlinks, no commands.** ``symlink``/``readlink``/``exec`` raise PermanentError.
  Symlinks in the *source* tree are recorded in the manifests (JSON objects), not
  stored as objects, so restoring from S3 still recreates them.
- **Ranged reads.** ``open_read(path, offset=, length=)`` and :meth:`S3Remote.read_range`
  send one ``Range`` GET, so a caller that needs one blob of a 16 MiB pack can fetch
  just that slice (the repository currently reads packs whole; see its ``read_pack``).
- **Errors** are translated in one place (:func:`translate_error`) into the ppo-dr
  tree: network failures, timeouts, 5xx and throttling are TransientError; missing
  keys/buckets and lost ``If-None-Match`` races are RemotePathError; refused or
  missing credentials are AuthError. Messages carry the bucket, key and AWS error code,
  never credentials, and auth errors are not chained (botocore's error dictionary can
  hold the access key id).
- **Retries.** botocore's "standard" mode with a small attempt count absorbs a single
  throttle or dropped connection; connect and read timeouts are set, so a hung
  endpoint becomes a TransientError that the task's own retry policy handles.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from ppo_dr.closing import ClosesOnExit
from ppo_dr.errors import (
    AuthError,
    DRError,
    PermanentError,
    RemotePathError,
    TransientError,
    UnsafeInputError,
)
from ppo_dr.transport.base import (
    CommitOnExit,
    EntryType,
    ExecResult,
    Remote,
    RemoteBase,
    RemoteStat,
)

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
SPOOL_IN_MEMORY = 16 * 1024 * 1024  # a pack fits in memory; anything larger spills to disk
LIST_PAGE = 1000  # S3's own maximum per ListObjectsV2 page

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchUpload"})
_AUTH = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidSecurity",
    }
)
_EXISTS = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
_TRANSIENT = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeTooSkewed",  # the clock is off: fixed by NTP, not by us; try later
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
        "OperationAborted",
    }
)


def translate_error(exc: BaseException, where: str, what: str) -> DRError | None:
    """The ppo-dr error for a botocore failure, or None if it is not one (a bug).

    AWS error codes decide first (throttling is a 503 ``SlowDown`` on S3 but other
    stores send 400 ``Throttling``); the HTTP status is the fallback. A HEAD has no
    body, so its errors arrive as a bare status code ("404", "403").
    """
    if isinstance(exc, DRError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            return RemotePathError(f"{where}: {what}: no such bucket")
        if code in _NOT_FOUND:
            return RemotePathError(f"{where}: {what}: no such file or directory")
        if code in _AUTH:
            return AuthError(f"{where}: {what}: credentials refused or not permitted ({code})")
        if code in _EXISTS:
            return RemotePathError(f"{where}: {what}: file exists (conditional write lost)")
        if code in {"InvalidRange", "416"}:
            return RemotePathError(f"{where}: {what}: range not satisfiable")
        if code in _TRANSIENT or status >= 500 or status == 429:
            return TransientError(f"{where}: {what}: server busy or failing ({code or status})")
        if 400 <= status < 500:
            return PermanentError(f"{where}: {what}: refused by the server ({code or status})")
        return TransientError(f"{where}: {what}: unexpected answer ({code or status})")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AuthError(f"{where}: {what}: no usable credentials ({type(exc).__name__})")
    if isinstance(exc, ParamValidationError):
        return PermanentError(f"{where}: {what}: invalid request ({exc})")
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        # Refused, unreachable, TLS, connect/read timeouts, a connection dropped
        # mid-body: the network or the endpoint, worth another try.
        return TransientError(f"{where}: {what}: network error ({type(exc).__name__})")
    if isinstance(exc, BotoCoreError):
        return PermanentError(f"{where}: {what}: {type(exc).__name__}")
    if isinstance(exc, TimeoutError | ConnectionError):
        return TransientError(f"{where}: {what}: network error ({type(exc).__name__})")
    return None


def _chain(exc: BaseException, err: DRError) -> BaseException | None:
    """What to chain a translated error to: not an auth failure, whose botocore
    response can hold the access key id (a traceback must not print it)."""
    return None if isinstance(err, AuthError) else exc


@dataclass
class _Listing:
    """One directory level: files (key name -> (size, mtime)) and sub-directories."""

    files: dict[str, tuple[int, int]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)


def _sort_key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class S3Reader(ClosesOnExit):
    """An object (or a byte range of one) streamed from a GET; errors translated."""

    def __init__(self, remote: S3Remote, path: str, body: Any) -> None:
        self._remote = remote
        self._path = path
        self._body = body
        self._closed = False

    def read(self, size: int | None = -1) -> bytes:
        if self._body is None:
            return b""
        with self._remote._op("read", self._path):
            data = self._body.read() if size is None or size < 0 else self._body.read(size)
        return bytes(data)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._body is not None:
                with contextlib.suppress(Exception):
                    self._body.close()


class S3AtomicWriter(CommitOnExit):
    """Spools what is written to a local temporary file; commit uploads it in one go.

    The upload is a single PUT below the multipart threshold, else a multipart upload
    (aborted if any part fails, so no half object ever appears). Either way S3 makes the
    object visible whole at the final key; ``temp_path`` is the final key too, since
    nothing is written under another name. With *exclusive* the upload carries
    ``If-None-Match: *`` and fails with RemotePathError if the key already exists.
    """

    def __init__(self, remote: S3Remote, final_path: str, *, exclusive: bool = False) -> None:
        self._remote = remote
        self.final_path = final_path
        self.temp_path = final_path
        self._key = remote._key(final_path)
        self._exclusive = exclusive
        self._size = 0
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=SPOOL_IN_MEMORY, prefix="ppo-s3-"
        )

    def write(self, data: bytes) -> int:
        if self._done:
            raise PermanentError(f"{self._remote.label}: write {self.final_path!r}: closed")
        written = self._spool.write(data)
        self._size += written
        return written

    def _finish(self) -> None:
        """Upload the spooled bytes to the final key (atomic by S3 semantics)."""
        self._spool.seek(0)
        self._remote._upload(
            self._key, self.final_path, self._spool, self._size, exclusive=self._exclusive
        )
        self._spool.close()

    def _discard(self) -> None:
        """Drop the spooled bytes; nothing was sent, the final key is untouched."""
        self._spool.close()


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
            config = Config(
                region_name=region,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"mode": "standard", "total_max_attempts": max(1, max_attempts)},
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
            raise err from _chain(exc, err)

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
            if code in _NOT_FOUND:
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
                    if str(exc.response.get("Error", {}).get("Code", "")) in _NOT_FOUND:
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
            upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=key)[
                "UploadId"
            ]
            try:
                parts = []
                number = 1
                while chunk := body.read(self._part_size):
                    answer = self._client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    )
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                    number += 1
                self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **cond,
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
        upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=dst_key)[
            "UploadId"
        ]
        try:
            parts = []
            starts = range(0, size, MAX_COPY_PART) if size else [0]
            for number, start in enumerate(starts, 1):
                args: dict[str, Any] = {}
                if size:
                    end = min(size, start + MAX_COPY_PART) - 1
                    args["CopySourceRange"] = f"bytes={start}-{end}"
                answer = self._client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=dst_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    **args,
                )
                parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
            extra = {"IfNoneMatch": "*"} if exclusive else {}
            self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=dst_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **extra,
            )
        except BaseException:
            self._abort_upload(dst_key, upload_id)
            raise

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
