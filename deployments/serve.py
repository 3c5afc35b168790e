"""``ppo-dr serve``: one process that runs every runbook on its schedule.

What it does, in order:

1. Finds the Prefect API: the one ``PREFECT_API_URL`` (or the active Prefect
   profile) names, else a ``prefect server start`` child of this process on
   127.0.0.1, with ``PREFECT_HOME=<ppo-dr home>/prefect`` (its SQLite database
   lives there) and its output in ``<ppo-dr home>/logs/prefect-server.log``.
   Schedules never fire on Prefect's ephemeral API, hence a real server.
2. Waits until ``GET /api/health`` answers (60 s or ``--server-timeout``, else the
   log's tail is shown).
3. Creates or updates the global concurrency limits of
   :data:`deployments.registry.CONCURRENCY_LIMITS` (a missing limit would run
   unthrottled, so this comes before any deployment is registered).
4. Serves every deployment of :data:`deployments.registry.DEPLOYMENTS` with
   :func:`prefect.serve` — or, with ``check``, registers them, prints them, pauses
   them (as serve does on shutdown) and returns. With its own server, serve first marks
   Crashed the runs of its deployments an earlier serve left Running or Pending
   (:mod:`deployments.orphaned_runs`): they would hold a singleton's slot forever.
5. Creates or updates the probe heartbeat automation of the fleet (a Proactive
   trigger that runs ``probe-watchdog`` when the probe's heartbeat events stop for
   two periods: :mod:`deployments.automations`), enabled while serving and
   disabled again on the way out (nobody serves the watchdog then); ``check``
   creates it disabled and leaves an existing one as it is.
6. Starts a ``probe-fleet`` run at once unless one is running or due within a minute
   (:func:`deployments.probe_start.start_probe_now`, as ``ppo-dr deploy`` does): the
   probe's interval schedule counts from its registration, so its first run would
   come a whole period (10 minutes) after serve started, with nobody watching.

Ctrl-C, SIGTERM and SIGHUP stop serving (Prefect pauses the deployments) and then
stop the server this process started, its whole process group, on every path out,
errors included. The server runs in its own session, so a Ctrl-C in the terminal
reaches only us and we stop things in order; on Linux it also gets SIGTERM if this
process dies without cleaning up (``PR_SET_PDEATHSIG``).

While serving, ``<home>/prefect/serve.json`` says where the API and UI are, for
other ``ppo-dr`` commands; a lock on ``<home>/prefect/serve.lock`` keeps a second
``serve`` from starting another server on the same database.

The server process and its lock are in :mod:`deployments.local_server`; this module
finds the API and registers and serves the deployments.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from deployments.automations import ensure_probe_automation, pause_probe_automation
from deployments.console import Echo, print_flushed
from deployments.local_server import (
    HOST,
    LocalPrefectServer,
    ServeError,
    server_lock,
    server_start_timeout,
    signals_ignored,
    stop_like_ctrl_c,
    ui_url_for,
)
from deployments.orphaned_runs import crash_orphaned_runs
from deployments.probe_start import start_probe_now
from ppo_dr import config

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

EXTERNAL_API_TIMEOUT = 15.0


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


def pause_deployments(deployments: list[RunnerDeployment], echo: Echo = print_flushed) -> None:
    """Pause each deployment that exists (best effort: we are shutting down)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with signals_ignored(), get_client(sync_client=True) as client:
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
    echo: Echo = print_flushed,
    server_timeout: float | None = None,
) -> int:
    """``ppo-dr serve``; returns the exit code. See the module docstring."""
    home = config.home()
    # Runs started by the runner inherit these, whatever directory they start in.
    os.environ["PPO_DR_HOME"] = str(home)
    os.environ.setdefault(config.STORE_PATIENCE_ENV, str(config.RUNBOOK_STORE_PATIENCE_S))
    fleet_path = _use_fleet(fleet, echo)

    # SIGINT keeps Python's own handler (asyncio turns it into a clean cancel while
    # serving); SIGTERM and SIGHUP are made to behave like it until serve takes over.
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    previous |= {s: signal.signal(s, stop_like_ctrl_c) for s in (signal.SIGTERM, signal.SIGHUP)}
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
                stack.enter_context(server_lock(prefect_home))
                log_path = home / "logs" / "prefect-server.log"
                server = LocalPrefectServer(prefect_home, log_path, port)
                stack.callback(server.stop)
                server.start()
                server_pid = server.pid
                echo(
                    f"Prefect server: starting on {HOST}:{server.port} (pid {server_pid}), "
                    f"PREFECT_HOME={prefect_home}, log {log_path}"
                )
                api_url = server.api_url
                deployments = build_deployments()  # while the server boots
                took = server.wait_until_healthy(server_timeout or server_start_timeout())
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
            deployment_ids: list[UUID] = []
            for deployment in deployments:  # registered (and resumed) before we say so
                applied = deployment.apply()
                assert isinstance(applied, UUID)  # the sync form, not a coroutine
                deployment_ids.append(applied)
            if server is not None:  # our own server, its lock held: no other runner
                crash_orphaned_runs(deployment_ids, echo)
            if ensure_probe_automation(fleet_path, enabled=True, echo=echo) is not None:
                stack.callback(pause_probe_automation, fleet_path, echo)
            # The probe's interval schedule counts from its registration: its first
            # run would be a whole period away, and nothing would watch the fleet.
            start_probe_now(echo)
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
