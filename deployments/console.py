"""How the long-running commands (``serve``, ``deploy``) talk to the operator: one line
at a time, flushed at once, so a log tailer or a test reading the pipe sees each step
as it happens. Callers take an ``echo`` argument so tests can collect the lines."""

from __future__ import annotations

from collections.abc import Callable

Echo = Callable[[str], None]


def print_flushed(message: str) -> None:
    """Print *message* and flush (stdout is a pipe under a supervisor)."""
    print(message, flush=True)
