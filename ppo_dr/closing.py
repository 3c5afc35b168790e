"""One ``with`` behaviour for everything that holds connections, files or locks.

:class:`LeavesOnExit` is the ``with`` protocol with a single hook, run however the
block ends; :class:`ClosesOnExit` is the common case (close on exit). Atomic writers
(commit or abort) and the repository lock (release) use the same hook.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class LeavesOnExit(abc.ABC):
    """``with thing:`` runs ``thing._leave(failed=...)`` however the block ends."""

    @abc.abstractmethod
    def _leave(self, *, failed: bool) -> None:
        """What leaving the block does; *failed* says it was left by an exception."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave(failed=exc_type is not None)


class ClosesOnExit(LeavesOnExit):
    """``with thing:`` closes *thing* however the block ends."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the object holds; safe to call more than once."""

    def _leave(self, *, failed: bool) -> None:
        self.close()
