"""What every ``ppo-dr`` command group shares: the error contract, common options and
where the state store is.

An operator at 3 a.m. never sees a traceback for something we anticipated: our own
errors (:class:`~ppo_dr.errors.DRError`) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer

from ppo_dr import config
from ppo_dr.errors import DRError

if TYPE_CHECKING:
    from ppo_dr.store import Store

P = ParamSpec("P")
R = TypeVar("R")

FleetOption = Annotated[
    Path | None,
    typer.Option("--fleet", "-f", help="Fleet file (default: $PPO_DR_FLEET or the lab's)."),
]
#: For the commands that move clients (failover, drain, rebalance): skip the pause.
ApproveOption = Annotated[
    bool, typer.Option("--approve", help="Do not pause for approval: it is approved.")
]


def command_group(help: str) -> typer.Typer:
    """A ``ppo-dr`` command group: called without a command, it shows its help."""
    return typer.Typer(help=help, no_args_is_help=True)


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


def store_url_for(fleet_file: Path | None) -> str:
    """The store URL: $PPO_DR_DB_URL, else the fleet's store.url, else the default.

    With $PPO_DR_DB_URL set the fleet file is not read, so a store command still works
    while the fleet file is being fixed.
    """
    from ppo_dr.inventory import load_fleet
    from ppo_dr.mirror.runbook import store_url

    if os.environ.get("PPO_DR_DB_URL"):
        return os.environ["PPO_DR_DB_URL"]
    path = fleet_file or config.fleet_file()
    return store_url(load_fleet(path) if path.exists() else None)


def open_store(fleet_file: Path | None) -> Store:
    """The state store the runbooks use (``$PPO_DR_DB_URL``, the fleet's, the default)."""
    from ppo_dr.store import Store

    return Store.open(store_url_for(fleet_file))
