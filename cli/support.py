"""What the ``ppo-dr`` command groups share: the error contract, common options, where
the state store and the Prefect API are, and the parsing and writing that several groups
do alike (a list of ids, a plan file).

An operator at 3 a.m. never sees a traceback for something we anticipated: our own
errors (:class:`~ppo_dr.errors.DRError`) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar, get_type_hints

import typer

from ppo_dr import config
from ppo_dr.errors import DRError, PermanentError
from ppo_dr.local_files import write_atomically

if TYPE_CHECKING:
    from ppo_dr.failover.plan import Plan
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


def takes_options(group: type[Any], name: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Give a command the options of the dataclass *group* as one argument *name*.

    Typer reads a command's options from its signature, so commands that take the same
    options would each list them, one parameter a line. The wrapper's signature lists
    *group*'s fields (each annotated with its ``typer.Option``) in the place of *name*,
    so ``--help`` and parsing are as if they were written out; the command gets them
    as one *group* value.
    """
    keyword = inspect.Parameter.KEYWORD_ONLY  # Typer passes every option by name
    hints = get_type_hints(group, include_extras=True)
    options = [
        inspect.Parameter(f.name, keyword, default=f.default, annotation=hints[f.name])
        for f in dataclasses.fields(group)
    ]

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        signature = inspect.signature(command, eval_str=True)
        parameters = [
            q
            for p in signature.parameters.values()
            for q in (options if p.name == name else [p.replace(kind=keyword)])
        ]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> R:
            values = {o.name: kwargs.pop(o.name) for o in options}
            return command(**kwargs, **{name: group(**values)})

        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


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


def require_api() -> str:
    """The Prefect API's URL, or a one-line error saying how to get one."""
    from deployments.prefect_api import api_url

    url = api_url()
    if url is None:
        raise PermanentError(
            "no Prefect API known: set PREFECT_API_URL or start `ppo-dr serve` first"
        )
    return url


def id_list(value: str | None, what: str) -> tuple[str, ...]:
    """A comma-separated list of ids ('a,b') given as option *what*; each is checked by
    whoever uses it (the planner)."""
    if value is None:
        return ()
    ids = tuple(part.strip() for part in value.split(","))
    if not all(ids):
        raise PermanentError(f"{what} {value!r}: empty item in the comma-separated list")
    return ids


def write_plan(plan: Plan, path: Path) -> None:
    """Write the plan's JSON to *path* atomically (a reader never sees half a plan)."""
    path = Path(path)
    if path.is_dir():
        raise PermanentError(f"cannot write the plan to {path}: it is a directory")
    try:
        write_atomically(path, plan.to_json().encode("utf-8"), mode=0o600)
    except OSError as exc:
        raise PermanentError(f"cannot write the plan to {path}: {exc.strerror}") from None
