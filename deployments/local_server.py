"""The ``prefect server start`` child that ``ppo-dr serve`` owns, and its plumbing.

The server runs in its own session (a Ctrl-C in the terminal reaches only ``serve``,
which stops things in order) and, on Linux, gets SIGTERM if ``serve`` dies without
cleaning up (``PR_SET_PDEATHSIG``). Stopping it takes its whole process group. A lock
on ``<home>/prefect/serve.lock`` keeps a second ``serve`` from starting another
server on the same database. The port is claimed here, by binding and listening on
it before the server starts, and the listening socket is handed to the server's
uvicorn (``--fd``): two serves started together cannot both pick the same free
port and end up talking to one server. Health is checked with plain HTTP, so
nothing here imports Prefect.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO

from ppo_dr.errors import PermanentError

HOST = "127.0.0.1"
#: Port of Prefect's own default; used when free, so the UI has a URL to bookmark.
PREFERRED_PORT = 4200
SERVER_START_TIMEOUT = 60.0
#: Overrides :data:`SERVER_START_TIMEOUT` (seconds): ``ppo-dr lab chaos`` gives its serve
#: longer, as a cold server on a loaded machine imports Prefect for minutes.
START_TIMEOUT_ENV = "PPO_DR_SERVER_START_S"


def server_start_timeout() -> float:
    """How long serve waits for its Prefect server: the environment's, else the default."""
    try:
        return max(float(os.environ.get(START_TIMEOUT_ENV, SERVER_START_TIMEOUT)), 1.0)
    except ValueError:
        return SERVER_START_TIMEOUT


SERVER_STOP_TIMEOUT = 15.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: The server's entry point: uvicorn on the inherited socket (argv[1]), kept from
#: anything the server starts itself.
_UVICORN_ON_FD = (
    "import os, sys; from uvicorn.main import main; fd = sys.argv[1]; "
    "os.set_inheritable(int(fd), False); "
    "main(['--factory', 'prefect.server.api.server:create_app', '--fd', fd])"
)


class ServeError(PermanentError):
    """``serve`` cannot start: no API, the server failed, or the port is taken."""


def claim_port(port: int | None, host: str = HOST) -> socket.socket:
    """A socket listening on *host*:*port*, bound now so no one else can take it.

    *port* None means Prefect's :data:`PREFERRED_PORT` if it is free, else any; 0
    means any free port. A named port that is taken raises ServeError.
    """
    wanted = PREFERRED_PORT if port is None else port
    try:
        return socket.create_server((host, wanted))
    except OSError as exc:
        if port is not None:
            raise ServeError(f"port {port} on {host} is in use; pick another --port") from exc
    return socket.create_server((host, 0))


def free_port(host: str = HOST) -> int:
    """A port on *host* that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def api_is_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True if ``GET <api_url>/health`` answers 200 (plain HTTP, no Prefect import)."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:  # noqa: S310 (our own http URL)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def ui_url_for(api_url: str) -> str:
    """The UI's address for an API address (the UI is served beside ``/api``)."""
    return api_url.rstrip("/").removesuffix("/api")


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child if we die without clean-up.

    The libc function is looked up here, in the parent, so the forked child only
    makes one foreign call before exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


@dataclass
class LocalPrefectServer:
    """A ``prefect server start`` child process on 127.0.0.1 that we own and stop."""

    prefect_home: Path
    log_path: Path
    #: The port asked for (see :func:`claim_port`); the port claimed once started.
    port: int | None = None
    #: Environment to start from (default ours); PREFECT_API_URL is always dropped.
    base_env: Mapping[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _log_start: int = field(default=0, init=False, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return ui_url_for(self.api_url)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def environment(self) -> dict[str, str]:
        """The base environment with the server's home; never pointed at another API."""
        base = os.environ if self.base_env is None else self.base_env
        env = {k: v for k, v in base.items() if k != "PREFECT_API_URL"}
        env["PREFECT_HOME"] = str(self.prefect_home)
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        env["PREFECT__SERVER_FINAL"] = "1"  # as ``prefect server start`` sets it
        # The UI calls the API at this address (Prefect's default assumes port 4200).
        env["PREFECT_UI_API_URL"] = self.api_url
        return env

    def start(self) -> None:
        """Claim the port, then start the server on it in its own session; output goes
        to the log file. Raises ServeError (and starts nothing) if the port is taken."""
        self.prefect_home.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        listener = claim_port(self.port)
        self.port = int(listener.getsockname()[1])
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self._log.write(f"--- ppo-dr serve (pid {os.getpid()}) {stamp}\n".encode())
        self._log.flush()
        # What ``prefect server start --background`` runs, on our listening socket,
        # which the server's own children must not inherit (they would keep the port).
        fd = listener.fileno()
        with listener:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _UVICORN_ON_FD, str(fd)],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
                pass_fds=(fd,),
            )

    def wait_until_healthy(self, timeout: float = SERVER_START_TIMEOUT) -> float:
        """Block until the API answers; return the seconds it took, or raise ServeError."""
        assert self.process is not None, "start() first"
        started = time.monotonic()
        while True:
            if api_is_healthy(self.api_url, timeout=1.0):
                return time.monotonic() - started
            code = self.process.poll()
            if code is not None:
                raise ServeError(
                    f"the Prefect server exited with code {code} before it was healthy; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() - started > timeout:
                raise ServeError(
                    f"the Prefect server at {self.api_url} was not healthy after "
                    f"{timeout:.0f} s; last lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def log_tail(self, lines: int = 25) -> str:
        """The last *lines* lines this server wrote to its log."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                text = log.read().decode("utf-8", errors="replace")
        except OSError as exc:
            return f"  (cannot read the log: {exc})"
        return "\n".join("  " + line for line in text.splitlines()[-lines:])

    def stop(self, timeout: float = SERVER_STOP_TIMEOUT) -> None:
        """Stop the server and everything in its process group: TERM, then KILL."""
        process, self.process = self.process, None
        if process is None:
            return
        pgid = process.pid  # start_new_session: its own group, led by it
        with signals_ignored():
            _signal_group(pgid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                process.wait(timeout=timeout)
            # Anything it left in its group (workers) goes with it.
            deadline = time.monotonic() + timeout
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let a second Ctrl-C not interrupt the (bounded) clean-up."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def stop_like_ctrl_c(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def server_lock(prefect_home: Path) -> Iterator[None]:
    """Hold ``serve.lock`` so a second serve does not share this server's database."""
    prefect_home.mkdir(parents=True, exist_ok=True)
    path = prefect_home / "serve.lock"
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise ServeError(
                f"ppo-dr serve (pid {holder}) already runs a Prefect server for "
                f"{prefect_home}; stop it first, or point PREFECT_API_URL at it"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)
            fcntl.flock(lock, fcntl.LOCK_UN)
