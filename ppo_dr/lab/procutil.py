"""What every lab process needs: its config, its log, its stop signal, files that change.

Each lab component (server, netsim, front door, workload) is its own process started
by the supervisor as ``python -m ppo_dr.lab.<component> --config FILE``. They share
these few helpers so they start and stop the same way: the config is a JSON file
validated by a pydantic model, logs go to stderr (the supervisor redirects them to
``logs/<component>.log``), SIGTERM and SIGINT end the process cleanly, and files that
other processes rewrite (fleet.yaml, routes.json, cut.json) are re-read when their
modification time changes.

Nothing here imports the heavy libraries (asyncssh, aiohttp, SQLAlchemy): a lab of
ten servers must be healthy within seconds on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ppo_dr.errors import DRError, InventoryError, LabError
from ppo_dr.local_files import write_atomically

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class LabConfig(BaseModel):
    """Base of the components' config files.

    Unknown keys are ignored so the supervisor can add fields for its own use (or a
    newer supervisor can add some) without breaking the components.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)


def read_config(path: str | Path, model: type[M]) -> M:
    """Read a component's JSON config; :class:`LabError` says what is wrong with it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read config {path}: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise LabError(f"config {path} is invalid:\n{exc}") from exc


def setup_logging(component: str) -> None:
    """Log to stderr, one line per event, with time and component (the supervisor files it)."""
    logging.basicConfig(
        level=os.environ.get("PPO_DR_LAB_LOG_LEVEL", "INFO").upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {component} %(levelname)s %(name)s: %(message)s",
    )


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so a component can shut down in order."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_component(
    component: str,
    main: Callable[[Path], Coroutine[Any, Any, None]],
    argv: list[str] | None = None,
) -> int:
    """The ``__main__`` of every component: parse ``--config``, log, run *main*, exit code.

    A :class:`DRError` (bad config, port in use) ends the process with status 2 and one
    readable line in the log instead of a traceback; anything else is a bug and keeps
    its traceback.
    """
    parser = argparse.ArgumentParser(prog=f"python -m ppo_dr.lab.{component}")
    parser.add_argument("--config", required=True, type=Path, help="the component's JSON config")
    args = parser.parse_args(argv)
    setup_logging(component)
    try:
        asyncio.run(main(args.config))
    except DRError as exc:
        log.error("%s cannot run: %s", component, exc)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


class WatchedFile:
    """Tells whether a file changed since the last look (mtime, size, inode).

    Writers replace files atomically (rename), which changes the inode even when the
    mtime's granularity hides a quick second write.
    """

    _NEVER: Final = (-1, -1, -1)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int, int] | None = self._NEVER

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self) -> bool:
        """True the first time, and whenever the file (or its absence) differs from last time."""
        now = self._signature()
        if now == self._seen:
            return False
        self._seen = now
        return True

    def forget(self) -> None:
        """Make the next :meth:`changed` answer True (e.g. on SIGHUP)."""
        self._seen = self._NEVER


class FleetWatch:
    """The fleet from fleet.yaml, re-read when the file changes.

    Servers and clients added at run time (provisioning, a client moved to a spare)
    become known without a restart. A file that does not validate (half-written, or
    broken by hand) is logged and the previous fleet kept: a component keeps serving
    what it knew rather than forgetting every client.
    """

    def __init__(self, path: str | Path) -> None:
        self._file = WatchedFile(path)
        self._fleet: Fleet | None = None
        self._lock = threading.Lock()  # the server's worker threads share one watch

    @property
    def path(self) -> Path:
        return self._file.path

    def current(self) -> Fleet | None:
        """The newest valid fleet, or None if there never was one."""
        with self._lock:
            if self._file.changed():
                from ppo_dr.inventory import load_fleet

                try:
                    self._fleet = load_fleet(self._file.path)
                    log.info(
                        "fleet %s loaded: %d servers, %d clients",
                        self._file.path,
                        len(self._fleet.servers),
                        len(self._fleet.clients),
                    )
                except InventoryError as exc:
                    log.warning("fleet %s not usable, keeping the previous one: %s", self.path, exc)
            return self._fleet


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Replace *path* with *data* as JSON so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    write_atomically(path, text.encode("utf-8"), mode=0o600)
