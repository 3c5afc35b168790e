"""What every ``ppo-dr`` sub-command shares: the error contract and common options.

An operator at 3 a.m. never sees a traceback for something we anticipated: our own
errors (:class:`~ppo_dr.errors.DRError`) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from ppo_dr.errors import DRError

P = ParamSpec("P")
R = TypeVar("R")

FleetOption = Annotated[
    Path | None,
    typer.Option("--fleet", "-f", help="Fleet file (default: $PPO_DR_FLEET or the lab's)."),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print *message* to stderr and return the Exit to raise."""
    typer.echo(message, err=True)
    return typer.Exit(code)


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn our own errors into a clear message and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except DRError as exc:
            raise fail(f"error: {exc}") from None

    return wrapper
