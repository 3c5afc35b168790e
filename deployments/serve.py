"""``ppo-dr serve``: one process that runs every runbook on its schedule.

What it does, in order:

1. Finds the Prefect API: the one ``PREFECT_API_URL`` (or the active Prefect
   profile) names, else a ``prefect server start`` child of this process on
   127.0.0.1, with ``PREFECT_HOME=<ppo-dr home>/prefect`` (its SQLite database
   lives there) and its output in ``<ppo-dr home>/logs/prefect-server.log``.
   Schedules never fire on Prefect's ephemeral API, hence a real server.
2. Waits until ``GET /api/health`` answers (60 s, else the log's tail is shown).
3. Creates or updates the global concurrency limits of
   :data:`deployments.registry.CONCURRENCY_LIMITS` (a missing limit would run
   unthrottled, so this comes before any deployment is registered).
4. Serves every deployment of :data:`deployments.registry.DEPLOYMENTS` with
   :func:`prefect.serve` — or, with ``check``, registers them, prints them, pauses
   them (as serve does on shutdown) and returns.
5. Creates or updates the probe heartbeat automation of the fleet (a Proactive
   trigger that runs ``probe-watchdog`` when the probe's heartbeat events stop for
   two periods: :func:`probe_heartbeat_automation`), enabled while serving and
   disabled again on the way out (nobody serves the watchdog then); ``check``
   creates it disabled and leaves an existing one as it is.

Ctrl-C, SIGTERM and SIGHUP stop serving (Prefect pauses the deployments) and then
stop the server this process started, its whole process group, on every path out,
errors included. The server runs in its own session, so a Ctrl-C in the terminal
reaches only us and we stop things in order; on Linux it also gets SIGTERM if this
process dies without cleaning up (``PR_SET_PDEATHSIG``).

While serving, ``<home>/prefect/serve.json`` says where the API and UI are, for
other ``ppo-dr`` commands; a lock on ``<home>/prefect/serve.lock`` keeps a second
``serve`` from starting another server on the same database.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from ppo_dr import config
from ppo_dr.errors import PermanentError

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.automations import AutomationCore
    from prefect.deployments.runner import RunnerDeployment

Echo = Callable[[str], None]

HOST = "127.0.0.1"
#: Port of Prefect's own default; used when free, so the UI has a URL to bookmark.
PREFERRED_PORT = 4200
SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 15.0
EXTERNAL_API_TIMEOUT = 15.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ServeError(PermanentError):
    """``serve`` cannot start: no API, the server failed, or the port is taken."""


def _echo(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- the server


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if nothing listens on *host*:*port* (and we may bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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
    port: int
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
        return env

    def start(self) -> None:
        """Start the server in its own session; output goes to the log file."""
        self.prefect_home.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self._log.write(f"--- ppo-dr serve (pid {os.getpid()}) {stamp}\n".encode())
        self._log.flush()
        command = [sys.executable, "-m", "prefect", "server", "start"]
        self.process = subprocess.Popen(
            [*command, "--host", HOST, "--port", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            start_new_session=True,
            preexec_fn=_parent_death_signal(),
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
        with _signals_ignored():
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
def _signals_ignored() -> Iterator[None]:
    """Let a second Ctrl-C not interrupt the (bounded) clean-up."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop_like_ctrl_c(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def _server_lock(prefect_home: Path) -> Iterator[None]:
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


# --------------------------------------------------------------------------- the API side


def external_api_url() -> str | None:
    """The API named by ``PREFECT_API_URL`` or the active Prefect profile, if any."""
    named = os.environ.get("PREFECT_API_URL")
    if named:
        return named.rstrip("/")
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return url.rstrip("/") if url else None


def wait_for_external_api(api_url: str, timeout: float = EXTERNAL_API_TIMEOUT) -> None:
    """Raise ServeError unless the API at *api_url* answers its health check."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            problem = client.api_healthcheck()
        if problem is None:
            return
        if time.monotonic() > deadline:
            raise ServeError(f"the Prefect API at {api_url} does not answer: {problem}")
        time.sleep(1.0)


def ensure_concurrency_limits(limits: Mapping[str, int]) -> list[tuple[str, int, str]]:
    """Create or update each global concurrency limit; return (name, slots, what was done).

    Idempotent: an existing limit with the right size and active is left alone. Limits
    not in *limits* are never touched (they may belong to someone else).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    done: list[tuple[str, int, str]] = []
    with get_client(sync_client=True) as client:
        for name, slots in limits.items():
            try:
                existing = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True)
                    )
                    done.append((name, slots, "created"))
                    continue
                except ObjectAlreadyExists:  # created by a concurrent serve
                    existing = client.read_global_concurrency_limit_by_name(name)
            if existing.limit == slots and existing.active:
                done.append((name, slots, "unchanged"))
                continue
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=slots, active=True)
            )
            was = f"{existing.limit}{'' if existing.active else ', inactive'}"
            done.append((name, slots, f"updated, was {was}"))
    return done


def build_deployments() -> list[RunnerDeployment]:
    """Every deployment of the registry, built now (not at import time)."""
    from deployments.registry import DEPLOYMENTS

    return [build() for build in DEPLOYMENTS]


def describe(deployment: RunnerDeployment) -> str:
    """One line per deployment: name, schedules, tags, concurrency, entry point."""
    when: list[str] = []
    for item in deployment.schedules or []:
        schedule: Any = item.schedule
        if getattr(schedule, "cron", None):
            when.append(f"cron '{schedule.cron}' ({schedule.timezone or 'UTC'})")
        elif getattr(schedule, "interval", None):
            when.append(f"every {schedule.interval}")
        else:
            when.append(type(schedule).__name__)
    limit = deployment.concurrency_limit
    options = deployment.concurrency_options
    concurrency = (
        f"; at most {limit} at a time"
        + (f" ({options.collision_strategy.value.lower()})" if options else "")
        if limit
        else ""
    )
    return (
        f"{deployment.flow_name}/{deployment.name}: {', '.join(when) or 'no schedule'}"
        f"; tags {', '.join(deployment.tags) or '-'}{concurrency}; "
        f"entrypoint {deployment.entrypoint}"
    )


def register_without_serving(deployments: list[RunnerDeployment]) -> None:
    """Register each deployment without changing whether it runs.

    A new deployment is created paused (nothing serves it once ``--check`` returns);
    an existing one keeps its paused flag, so a check against a shared API never
    pauses or resumes deployments that another ``serve`` is running.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for deployment in deployments:
            try:
                existing = client.read_deployment_by_name(
                    f"{deployment.flow_name}/{deployment.name}"
                )
            except ObjectNotFound:
                deployment.paused = True
            else:
                deployment.paused = existing.paused
            deployment.apply()


def pause_deployments(deployments: list[RunnerDeployment], echo: Echo = _echo) -> None:
    """Pause each deployment that exists (best effort: we are shutting down)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with _signals_ignored(), get_client(sync_client=True) as client:
        for deployment in deployments:
            name = f"{deployment.flow_name}/{deployment.name}"
            try:
                found = client.read_deployment_by_name(name)
                if not found.paused:
                    client.pause_deployment(found.id)
            except ObjectNotFound:
                continue
            except Exception as exc:  # the API may be gone; say so and go on stopping
                echo(f"warning: could not pause {name}: {exc}")


#: Prefect's shortest window for a Proactive trigger.
MIN_PROACTIVE_WITHIN_S = 10.0


def probe_automation_name(fleet_name: str) -> str:
    return f"ppo-dr probe heartbeat: {fleet_name}"


def probe_heartbeat_automation(
    fleet_name: str, period_s: float, watchdog_deployment_id: UUID, *, enabled: bool = True
) -> AutomationCore:
    """The probe's liveness, watched by the Prefect server itself (a Proactive trigger).

    If no ``ppo-dr.probe.heartbeat`` event about ``ppo-dr.probe.<fleet>`` arrives for
    two probe periods, the server runs the ``probe-watchdog`` deployment. This path
    does not depend on the probe or on the watchdog's own schedule; the watchdog then
    checks the store and pages (the ``probe-silent`` incident). Its parameter
    ``silent_after_s`` is ONE period: the events already showed two periods of silence,
    and the store's heartbeat is kept per minute, so it may look up to a minute newer.
    The server fires again after every further empty window; the watchdog's incident
    is idempotent, so that pages once.
    """
    from prefect.automations import AutomationCore, EventTrigger, Posture, RunDeployment

    from tasks.probe import HEARTBEAT_EVENT, heartbeat_resource

    within = max(MIN_PROACTIVE_WITHIN_S, 2.0 * period_s)
    return AutomationCore(
        name=probe_automation_name(fleet_name),
        description=(
            f"No probe heartbeat for {within:.0f} s (two probe periods): run probe-watchdog, "
            "which pages the on-call with a probe-silent incident."
        ),
        enabled=enabled,
        tags=["ppo-dr", "probe"],
        trigger=EventTrigger(
            expect={HEARTBEAT_EVENT},
            match={"prefect.resource.id": heartbeat_resource(fleet_name)},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within),
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=watchdog_deployment_id,
                parameters={"silent_after_s": float(period_s)},
            )
        ],
    )


def ensure_automation(automation: AutomationCore, *, keep_enabled: bool = False) -> str:
    """Create *automation*, or bring the one of the same name in line; what was done.

    Idempotent: an identical automation is left alone; duplicates of the name (two
    serves racing) are deleted. With *keep_enabled*, an existing automation keeps its
    enabled flag (``serve --check`` must not switch on or off what a running serve
    owns).
    """
    from prefect.client.orchestration import get_client

    def view(a: Any) -> dict[str, Any]:
        fields = {"description", "enabled", "tags", "trigger", "actions"}
        out: dict[str, Any] = a.model_dump(mode="json", include=fields)
        out["trigger"].pop("id", None)  # minted per object, not part of the definition
        return out

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(automation.name)
        if not existing:
            client.create_automation(automation)
            return "created"
        keep, *extra = sorted(existing, key=lambda a: str(a.id))
        for duplicate in extra:
            client.delete_automation(duplicate.id)
        if keep_enabled:
            automation = automation.model_copy(update={"enabled": keep.enabled})
        if view(keep) == view(automation) and not extra:
            return "unchanged"
        client.update_automation(keep.id, automation)
        return "updated"


def ensure_probe_automation(
    fleet_file: Path, *, enabled: bool, keep_enabled: bool = False, echo: Echo = _echo
) -> str | None:
    """Create or update the fleet's probe heartbeat automation (after the deployments
    are registered: it names the ``probe-watchdog`` one). None, with a warning, when
    there is no valid fleet file or no watchdog deployment to run."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.probe import probe_period_s
    from ppo_dr.errors import DRError
    from ppo_dr.inventory import load_fleet

    try:
        fleet = load_fleet(fleet_file)
    except (DRError, OSError) as exc:
        echo(f"warning: no probe heartbeat automation (fleet file: {exc})")
        return None
    try:
        with get_client(sync_client=True) as client:
            watchdog = client.read_deployment_by_name("probe-watchdog/probe-watchdog")
    except ObjectNotFound:
        echo("warning: no probe heartbeat automation: probe-watchdog is not registered")
        return None
    automation = probe_heartbeat_automation(
        fleet.name, probe_period_s(fleet.timing), watchdog.id, enabled=enabled
    )
    try:
        what = ensure_automation(automation, keep_enabled=keep_enabled)
    except Exception as exc:  # the schedule-driven watchdog still watches: say so, go on
        echo(f"warning: probe heartbeat automation not set up: {type(exc).__name__}: {exc}")
        return None
    echo(f"automation: {automation.name} ({what})")
    return what


def pause_probe_automation(fleet_file: Path, echo: Echo = _echo) -> None:
    """Disable the heartbeat automation as serve stops (best effort, like the
    deployments): with nobody serving probe-watchdog, its runs would never start."""
    from prefect.client.orchestration import get_client

    from ppo_dr.inventory import load_fleet

    with _signals_ignored():
        try:
            name = probe_automation_name(load_fleet(fleet_file).name)
            with get_client(sync_client=True) as client:
                for automation in client.read_automations_by_name(name):
                    if automation.enabled:
                        client.pause_automation(automation.id)
        except Exception as exc:  # the API may be gone; say so and go on stopping
            echo(f"warning: could not pause the probe heartbeat automation: {exc}")


# --------------------------------------------------------------------------- the command


def _use_fleet(fleet: Path | None, echo: Echo) -> Path:
    """Resolve the fleet file runs will use and export it; refuse a named bad file.

    A file named with ``--fleet`` must be valid. The default one (``$PPO_DR_FLEET``
    or the lab's) may not exist yet or be mid-edit: that is only a warning, since
    runs read it when they start.
    """
    from ppo_dr.errors import InventoryError
    from ppo_dr.inventory import load_fleet

    path = (fleet or config.fleet_file()).expanduser().resolve()
    if fleet is not None:
        if not path.exists():
            raise ServeError(f"fleet file {path} does not exist")
        load_fleet(path)  # InventoryError lists every violation
        os.environ["PPO_DR_FLEET"] = str(path)
        echo(f"fleet file: {path}")
    elif path.exists():
        try:
            load_fleet(path)
        except InventoryError as exc:
            echo(f"warning: {exc}\nruns that need the fleet will fail until it is fixed")
        else:
            echo(f"fleet file: {path}")
    else:
        echo(
            f"fleet file: {path} does not exist yet (start the lab or pass --fleet); "
            "runs that need it will fail until it does"
        )
    return path


def _write_state(path: Path, api_url: str, server_pid: int | None) -> None:
    state = {
        "api_url": api_url,
        "ui_url": ui_url_for(api_url),
        "serve_pid": os.getpid(),
        "server_pid": server_pid,
    }
    path.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def run_serve(
    *,
    port: int | None = None,
    fleet: Path | None = None,
    check: bool = False,
    echo: Echo = _echo,
) -> int:
    """``ppo-dr serve``; returns the exit code. See the module docstring."""
    home = config.home()
    # Runs started by the runner inherit these, whatever directory they start in.
    os.environ["PPO_DR_HOME"] = str(home)
    fleet_path = _use_fleet(fleet, echo)

    # SIGINT keeps Python's own handler (asyncio turns it into a clean cancel while
    # serving); SIGTERM and SIGHUP are made to behave like it until serve takes over.
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    previous |= {s: signal.signal(s, _stop_like_ctrl_c) for s in (signal.SIGTERM, signal.SIGHUP)}
    server_pid: int | None = None
    serving = False
    try:
        with contextlib.ExitStack() as stack:
            deployments: list[RunnerDeployment] = []
            api_url = external_api_url()
            if api_url:
                if port is not None:
                    echo(f"note: --port {port} ignored; using the API at {api_url}")
                echo(f"Prefect API: {api_url} (from PREFECT_API_URL or the Prefect profile)")
                server = None
            else:
                prefect_home = home / "prefect"
                stack.enter_context(_server_lock(prefect_home))
                if port is None:
                    port = PREFERRED_PORT if port_is_free(PREFERRED_PORT) else free_port()
                elif not port_is_free(port):
                    raise ServeError(f"port {port} on {HOST} is in use; pick another --port")
                log_path = home / "logs" / "prefect-server.log"
                server = LocalPrefectServer(prefect_home, log_path, port)
                stack.callback(server.stop)
                server.start()
                server_pid = server.pid
                echo(
                    f"Prefect server: starting on {HOST}:{port} (pid {server_pid}), "
                    f"PREFECT_HOME={prefect_home}, log {log_path}"
                )
                api_url = server.api_url
                deployments = build_deployments()  # while the server boots
                took = server.wait_until_healthy()
                echo(f"Prefect server: healthy after {took:.1f} s")

            # For this process and the runs serve starts: this API, and results (a
            # failed run's pickled exception) under our home rather than ~/.prefect.
            os.environ["PREFECT_API_URL"] = api_url
            storage = os.environ.setdefault(
                "PREFECT_LOCAL_STORAGE_PATH", str(home / "prefect" / "storage")
            )
            from prefect.settings import (
                PREFECT_API_URL,
                PREFECT_LOCAL_STORAGE_PATH,
                temporary_settings,
            )

            stack.enter_context(
                temporary_settings(
                    updates={PREFECT_API_URL: api_url, PREFECT_LOCAL_STORAGE_PATH: storage}
                )
            )
            if server is None:
                wait_for_external_api(api_url)
                deployments = build_deployments()

            echo("concurrency limits:")
            for name, slots, what in ensure_concurrency_limits(_registry_limits()):
                echo(f"  {name}: {slots} slot(s) ({what})")
            echo("deployments:")
            for deployment in deployments:
                echo(f"  {describe(deployment)}")

            if check:
                register_without_serving(deployments)
                ensure_probe_automation(fleet_path, enabled=False, keep_enabled=True, echo=echo)
                echo(f"check: OK, {len(deployments)} deployment(s) registered at {api_url}")
                return 0

            state_file = home / "prefect" / "serve.json"
            state_file.parent.mkdir(parents=True, exist_ok=True)
            stack.callback(state_file.unlink, missing_ok=True)
            _write_state(state_file, api_url, server_pid)
            from prefect import serve

            # Prefect pauses them when serve stops; if a signal lands before its
            # runner has started, nobody would: pause them here too (idempotent).
            stack.callback(pause_deployments, deployments, echo)
            serving = True
            for deployment in deployments:  # registered (and resumed) before we say so
                deployment.apply()
            if ensure_probe_automation(fleet_path, enabled=True, echo=echo) is not None:
                stack.callback(pause_probe_automation, fleet_path, echo)
            echo(f"Prefect UI: {ui_url_for(api_url)}")
            echo("serving; Ctrl-C stops" + (" serving and the server" if server else ""))
            serve(*deployments, print_starting_message=False)
            echo("stopped serving (Prefect paused the deployments)")
            return 0
    except KeyboardInterrupt:
        echo("stopped" if serving else "interrupted")
        return 0 if serving else 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if server_pid is not None:
            echo(f"Prefect server: stopped (pid {server_pid})")


def _registry_limits() -> dict[str, int]:
    from deployments.registry import CONCURRENCY_LIMITS

    return CONCURRENCY_LIMITS
