"""The one error tree of ppo-dr.

    DRError                        anything ppo-dr raises on purpose
    ├── TransientError             may succeed if tried again (timeouts, resets, throttling)
    │   ├── ApiUnreachable         the Prefect API did not answer (retried over a restart)
    │   ├── ChannelTransientError    channels.base: a provider may take the message later
    │   ├── RepositoryLocked         mirror.errors: another run holds the repository lock
    │   └── WaitTimedOut             deployments.demo.waiting: what the demo waited for did not
    │                                happen in time (also a ``TimeoutError``)
    └── PermanentError             will fail again the same way: do not retry
        ├── InventoryError         fleet.yaml breaks a rule (carries every violation)
        │   └── _Refused             inventory.load: a YAML feature a fleet file may not use
        ├── UnsafeInputError       a hostile or malformed id/path, refused before any I/O
        ├── PlacementConflict      another run moved the client first (compare-and-set lost)
        ├── LabError               the embedded lab cannot do what was asked
        │   └── ClientNotHere, DataRootMissing, ClientFrozen, CommandFailed
        │                            lab.restricted_exec: a refused lab command
        ├── HostKeyError           a server's host key is unknown or changed (never auto-accepted)
        ├── AuthError              a server refused our credentials, or they cannot be loaded
        ├── RemotePathError        a remote path is missing, forbidden or refused by the server
        │   └── ReceiverMissing      mirror.restore_remote: no tar receiver there (SFTP instead)
        ├── RepositoryError          mirror.errors: the repository cannot be used as asked
        │   ├── WrongKeyError        the key given does not open it (or one was needed, or not)
        │   └── DamagedDataError     stored data failed verification (names pack and blob)
        ├── ChannelPermanentError    channels.base: a provider will refuse this message again
        ├── ProviderError            providers.base: provisioning/routing refused or misconfigured
        ├── PlanError                placement: a failover request cannot be planned
        ├── IdleSpareError           fleet_access: a spare no client is placed on (no mirror)
        ├── VerifyMismatch           failover.checks: a restored file differs from its snapshot
        ├── DrillPlanError           failover.drill: a drill cannot be planned as asked
        ├── RunbookFailed          a run did not do all it was asked (carries its results)
        ├── ServeError               deployments.local_server: ``serve`` cannot start
        ├── WorkerError              deployments.workers: a worker cannot start as asked (DC, pool)
        ├── DeployError              deployments.deploy: the server cannot take the deployments
        └── StoryFailed              deployments.demo.dc_loss: a demo story's run ended
                                     otherwise than the runbooks promise

The classes indented one step further are defined beside the code that raises them
(module named first); every error class in the project derives from this tree, so
retrying is decided by the base class alone. Library errors are translated at the
boundary (``raise TransientError(...) from exc``), so task retry conditions only
need :func:`is_retryable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class DRError(Exception):
    """Base of every error ppo-dr raises on purpose."""


class TransientError(DRError):
    """A failure that may go away if the same call is tried again."""


class PermanentError(DRError):
    """A failure that will repeat: retrying only delays the page."""


class RunbookFailed(PermanentError):
    """A runbook that did not do all it was asked, with the results it did get.

    A Failed run's data must be an exception: when the run ends, Prefect turns that data
    into the exception it raises, and a dict or a list there is "Unexpected result for
    failed state" (a TypeError in the worker's log, the results lost to whoever reads
    the run). The results (per client, per mirror) travel here instead, as ``result``.
    """

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[type[RunbookFailed], tuple[str, Any]]:
        """Pickled with its result (Prefect persists a run's data by pickling it)."""
        return (type(self), (str(self), self.result))


class ApiUnreachable(TransientError):
    """The Prefect API did not answer: it is restarting, or the way to it broke. Tried
    again over a restart's length (``retry_policy.API_RETRY_DELAYS``), not a call's."""


class UnsafeInputError(PermanentError):
    """An id or path that could escape its place (shell, filesystem) was refused."""


class LabError(PermanentError):
    """The embedded lab fleet cannot carry out a request."""


class PlacementConflict(PermanentError):
    """A compare-and-set on a client's placement lost to another writer."""

    def __init__(self, client_id: str, expected_version: int, actual_version: int | None) -> None:
        self.client_id = client_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        found = "no placement" if actual_version is None else f"version {actual_version}"
        super().__init__(
            f"placement of client {client_id!r} changed under us: expected version "
            f"{expected_version}, found {found}; another run moved it first (re-plan, do not retry)"
        )


@dataclass(frozen=True)
class Violation:
    """One broken rule in an inventory file: where, which rule, and what was found."""

    file: str
    path: str
    rule: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        at = self.path or "(top level)"
        return f"{where}: {at}: {self.message} [rule: {self.rule}]"


class InventoryError(PermanentError):
    """fleet.yaml is unreadable or breaks one or more rules; lists them all."""

    def __init__(self, file: str, violations: Sequence[Violation]) -> None:
        self.file = file
        self.violations = list(violations)
        lines = "\n".join(f"  {v}" for v in self.violations)
        super().__init__(f"{file}: {len(self.violations)} violation(s)\n{lines}")


def is_retryable(exc: BaseException) -> bool:
    """True for errors worth another try: ours marked transient, and raw OS timeouts."""
    if isinstance(exc, PermanentError):
        return False
    if isinstance(exc, TransientError):
        return True
    return isinstance(exc, TimeoutError | ConnectionError)


class HostKeyError(PermanentError):
    """A server's host key is not in our known_hosts, or differs from it (possible MITM).

    Where known: the server it is about, and the fingerprints of the key it offered
    and of the one pinned for it (an operator compares them out of band).
    """

    def __init__(
        self,
        message: str,
        *,
        server_id: str | None = None,
        offered: str | None = None,
        pinned: str | None = None,
    ) -> None:
        super().__init__(message)
        self.server_id = server_id
        self.offered = offered
        self.pinned = pinned


class AuthError(PermanentError):
    """A server refused our key, or the key cannot be loaded: fix config, do not retry."""


class RemotePathError(PermanentError):
    """A remote path is missing, not permitted, or the server refused the operation on it."""
