"""One ``with`` behaviour for everything that holds connections or files: close on exit."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class ClosesOnExit(abc.ABC):
    """``with thing:`` closes *thing* however the block ends."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the object holds; safe to call more than once."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
