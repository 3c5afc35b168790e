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

The modules: ``remote`` (:class:`S3Remote`: the operations), ``files`` (the reader
and the atomic writer), ``translate`` (the error mapping).
"""

from ppo_dr.transport.s3.files import S3AtomicWriter, S3Reader
from ppo_dr.transport.s3.remote import S3Remote
from ppo_dr.transport.s3.translate import translate_error

__all__ = ["S3AtomicWriter", "S3Reader", "S3Remote", "translate_error"]
