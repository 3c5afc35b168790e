"""Errors of the mirror repository, placed in the one ppo-dr error tree.

    PermanentError
    ├── RepositoryError        the repository is missing, foreign, or in a format we do not read
    │   ├── WrongKeyError      encrypted without a key given, with a different key, or vice versa
    │   └── DamagedDataError   a pack, blob, index or manifest fails its hash/authentication
    TransientError
    └── RepositoryLocked       another run holds the lock (try again later; never waited for)

A damaged blob is permanent on that mirror, but a restore asks the next mirror.
"""

from __future__ import annotations

from ppo_dr.errors import PermanentError, TransientError


class RepositoryError(PermanentError):
    """The repository cannot be used as asked: fix the setup, do not retry."""


class WrongKeyError(RepositoryError):
    """The key given does not open this repository (or one was needed, or not)."""


class DamagedDataError(RepositoryError):
    """Stored data failed verification; names the mirror, pack and blob."""

    def __init__(self, message: str, *, pack_id: str = "", blob_id: str = "") -> None:
        super().__init__(message)
        self.pack_id = pack_id
        self.blob_id = blob_id


class RepositoryLocked(TransientError):
    """Another snapshot or prune holds the repository lock and it is not stale."""
