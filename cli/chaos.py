"""``ppo-dr lab chaos``: break a running lab fault by fault and print the evidence.

The runbooks act as they would in production. On the loopback lab this command starts
``ppo-dr serve`` for it (its own Prefect server under ``<lab>/chaos-serve``); on the
distributed lab (``lab up --topology distributed``) the runbooks already run on the
lab's workers against its HA control plane, and this command only talks to that API.
Either way it starts a probe and each mirror run at once, and plays the on-call where
the policy asks a person (approving the failover plan). Everything else is in
:mod:`ppo_dr.lab.chaos`. Exit 0 only if every expectation of every fault held, 1 if one
did not, 2 for an error before the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer

from cli.support import reports_errors
from ppo_dr import config
from ppo_dr.errors import LabError, PermanentError

if TYPE_CHECKING:
    from ppo_dr.lab.chaos.fleets import DistributedFleet, LoopbackFleet

#: The lab's Prefect server may take this long to be healthy (serve's default, 60 s, was
#: missed twice in a row at a load of 50-60: a cold start then took longer).
SERVER_HEALTHY_S = 180.0
#: Limits for serve to come up and go down (a cold Prefect server on a loaded box): its
#: server's 180 s, then the limits, the deployments and the probe's first run (at a load
#: of 60, 240 s in all was missed once).
SERVE_START_S = 360.0
SERVE_STOP_S = 90.0
APPROVE_WAIT_S = 60.0
#: A run the chaos faults start (a drill of one client, a mirror of the lab's fleet).
RUN_WAIT_S = 600.0
#: A run due while another holds its deployment's slot is cancelled; the lab drills
#: every 5 minutes and mirrors every minute, so a few tries find the slot free.
RUN_ATTEMPTS = 3
RUN_RETRY_S = 20.0


@reports_errors
def chaos(
    directory: Annotated[
        Path | None, typer.Option("--dir", "-d", help="Lab directory (default: $PPO_DR_HOME/lab).")
    ] = None,
    faults: Annotated[
        str, typer.Option("--faults", help="Comma-separated fault names, or all (implemented).")
    ] = "all",
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the targets (and of the soak's faults).")
    ] = 1,
    soak: Annotated[
        str | None,
        typer.Option(
            "--soak",
            help="Run faults drawn from --faults by the seed for this long (e.g. 30m, 2h), "
            "then verify every repository and every client's journal.",
        ),
    ] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write one JSON object per fault here.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the HTML report (table, charts) here.")
    ] = None,
) -> None:
    """Inject each fault into the running lab, let the runbooks act, check, heal, repeat."""
    from ppo_dr.lab.chaos.catalogue import select_faults
    from ppo_dr.lab.chaos.fleets import DistributedFleet, open_fleet
    from ppo_dr.lab.chaos.report import report_html, results_json, results_table
    from ppo_dr.lab.chaos.runner import ChaosRun
    from ppo_dr.lab.chaos.verdict import ChaosResult
    from ppo_dr.store import Store

    specs = select_faults(faults)  # bad input: refused before anything is touched
    soak_s = _soak_seconds(soak) if soak is not None else None
    for path in (json_file, report):
        if path is not None and not path.parent.is_dir():
            raise PermanentError(f"{path}: its directory does not exist")
    fleet = open_fleet(directory or config.lab_dir())
    in_force = fleet.faults_in_force()
    if in_force:
        raise LabError(
            f"faults already in force ({json.dumps(in_force)}): `ppo-dr lab heal` them first"
        )
    started = time.monotonic()
    runbooks = _on_control_plane(fleet) if isinstance(fleet, DistributedFleet) else _served(fleet)
    with runbooks as operator, Store.open(fleet.lab.store_url) as store:
        done: list[ChaosResult] = []

        def record(result: ChaosResult) -> None:
            """Each fault's row as soon as it is judged: a long run shows its progress."""
            done.append(result)
            if json_file is not None:
                json_file.write_text(results_json(done), encoding="utf-8")

        run = ChaosRun(fleet, store, operator, seed=seed, progress=typer.echo, on_result=record)
        results = run.run(specs) if soak_s is None else run.soak(specs, soak_s)
    duration = time.monotonic() - started
    typer.echo(results_table(results))
    typer.echo(f"chaos: {sum(r.passed for r in results)}/{len(results)} held in {duration:.0f} s")
    if report is not None:
        title = f"ppo-dr chaos run on {fleet.lab.directory}"
        report.write_text(report_html(results, title=title, duration_s=duration), "utf-8")
    if not all(r.passed for r in results):
        raise typer.Exit(1)


def _soak_seconds(text: str) -> float:
    from cli.maintenance import parse_for

    try:
        return parse_for(text).total_seconds()
    except PermanentError:
        raise PermanentError(f"--soak {text!r} is not a duration like '30m' or '2h'") from None


class PrefectOperator:
    """The on-call's answers, given through the served Prefect API; and that API's
    server killed and started again (prefect-server-kill)."""

    def __init__(self, api_url: str, home: Path | None = None) -> None:
        self.api_url = api_url
        self.home = home  # serve's PPO_DR_HOME: its server's database and log
        self.restarted: Any = None  # the server started again, stopped at the end

    def restart_server(self, down_s: float) -> None:
        """SIGKILL the Prefect server serve runs (its process group), keep it down
        *down_s* seconds, start it again on the same port and database, return once it
        answers: the control plane's restart (:func:`crash_and_start`) with a Prefect
        server's start."""
        from urllib.parse import urlsplit

        from deployments.local_server import LocalPrefectServer, ServeError
        from ppo_dr.lab.controlplane_restart import crash_and_start

        assert self.home is not None
        home = self.home
        state = json.loads((home / "prefect" / "serve.json").read_text(encoding="utf-8"))
        pid = self.restarted.pid if self.restarted is not None else state.get("server_pid")
        if not isinstance(pid, int):
            raise LabError("serve runs no Prefect server of its own to kill")

        def start() -> None:
            log = home / "logs" / "prefect-server.log"
            self.restarted = LocalPrefectServer(home / "prefect", log, urlsplit(self.api_url).port)
            try:
                self.restarted.start()
                self.restarted.wait_until_healthy(SERVE_START_S)
            except ServeError as exc:
                raise LabError(str(exc)) from exc

        crash_and_start(pid, start, down_s=down_s)

    def stop_restarted(self) -> None:
        """Stop a server :meth:`start_server` started (serve stops only its own)."""
        if self.restarted is not None:
            self.restarted.stop()
            self.restarted = None

    def approve(self, plan_id: str) -> None:
        from deployments.demo.session import prefect_api
        from deployments.prefect_api import approve_plan

        answer = {"approve": True, "by": "chaos", "note": "chaos run: approved as the on-call"}
        with prefect_api(self.api_url):
            approve_plan(plan_id, answer, wait_s=APPROVE_WAIT_S)

    def run_to_end(self, deployment: str, parameters: dict[str, Any]) -> str:
        """A run of *deployment* to its end; started again while another run holds the
        deployment's one slot (the new run is then cancelled, e.g. a drill while a
        scheduled one runs)."""
        from prefect.client.schemas.objects import FlowRun

        from deployments.demo.session import prefect_api

        state = "NOT RUN"
        for attempt in range(RUN_ATTEMPTS):
            if attempt:
                time.sleep(RUN_RETRY_S)
            with prefect_api(self.api_url):
                run = _run_of(deployment, parameters, RUN_WAIT_S)
            assert isinstance(run, FlowRun)  # the sync form, not a coroutine
            state = run.state.type.value if run.state is not None else "UNKNOWN"
            if state != "CANCELLED":
                break
        return state

    def start_run(self, deployment: str, parameters: dict[str, Any]) -> str:
        from prefect.client.schemas.objects import FlowRun

        from deployments.demo.session import prefect_api

        with prefect_api(self.api_url):
            run = _run_of(deployment, parameters, 0)
        assert isinstance(run, FlowRun)  # the sync form, not a coroutine
        return str(run.id)

    def running_run(self, deployment: str) -> tuple[str, datetime] | None:
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        from deployments.demo.session import first_run_of, prefect_api

        running = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
        with prefect_api(self.api_url) as client:
            name = deployment.split("/", 1)[-1]
            run = first_run_of(client, name, FlowRunFilter(state=running))
        if run is None or run.start_time is None:
            return None
        return str(run.id), run.start_time

    def run_state(self, run_id: str) -> str:
        from deployments.demo.session import prefect_api

        with prefect_api(self.api_url) as client:
            run = client.read_flow_run(UUID(run_id))
        return run.state.type.value if run.state is not None else "UNKNOWN"

    def run_history(self, run_id: str) -> list[tuple[str, datetime]]:
        from deployments.demo.session import prefect_api

        with prefect_api(self.api_url) as client:
            states = client.read_flow_run_states(UUID(run_id))
        return sorted((s.type.value, s.timestamp) for s in states if s.timestamp is not None)

    def rerun(self, run_id: str) -> None:
        from prefect.states import AwaitingRetry

        from deployments.demo.session import prefect_api

        note = "rerun after a crash (chaos run, as the deploy automation does)"
        with prefect_api(self.api_url) as client:
            client.set_flow_run_state(UUID(run_id), AwaitingRetry(message=note), force=True)


class ControlPlaneOperator(PrefectOperator):
    """The on-call on the distributed lab's API; prefect-server-kill there is the whole
    API lost: both API servers SIGKILLed at once and started again (HAProxy stays)."""

    def __init__(self, api_url: str, control_plane: Path) -> None:
        super().__init__(api_url)
        self.control_plane = control_plane

    def restart_server(self, down_s: float) -> None:
        from ppo_dr.lab.controlplane_record import load
        from ppo_dr.lab.controlplane_restart import restart_together

        plane = load(self.control_plane)  # its API servers as recorded (api-1, api-2, ...)
        servers = [c.name for c in plane.components if c.name.startswith("api-")]
        restart_together(self.control_plane, servers, down_s=down_s)

    def stop_restarted(self) -> None:
        """Nothing: the restarted servers are the control plane's, ``lab down`` stops them."""


def _run_of(deployment: str, parameters: dict[str, Any], timeout: float) -> Any:
    """``run_deployment`` (inside ``prefect_api``); a deployment the API does not have is
    a :class:`LabError` naming it, which fails that fault's row, not the whole run."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        return run_deployment(deployment, parameters=parameters, timeout=timeout)
    except ObjectNotFound:
        raise LabError(f"the Prefect API has no deployment {deployment}") from None


@contextlib.contextmanager
def _on_control_plane(fleet: DistributedFleet) -> Iterator[PrefectOperator]:
    """The distributed lab's own API, its probe and every mirror started now. In a
    namespaced lab this process reaches the servers as the internet does, from the
    ``wan`` namespace where their public addresses are (:mod:`ppo_dr.transport.dial`):
    nothing it sends is routed out of the host."""
    from ppo_dr.lab.controlplane import api_healthy
    from ppo_dr.transport.dial import NETNS_ENV

    api_url = fleet.api_url
    if not api_healthy(api_url):
        raise LabError(f"the distributed lab's Prefect API at {api_url} does not answer")
    typer.echo(f"the lab's control plane answers (API {api_url}); its workers run the runbooks")
    net = fleet.lab.network()
    before = os.environ.get(NETNS_ENV)
    if net is not None:
        os.environ[NETNS_ENV] = net.wan
    try:
        _start_now(api_url, fleet)
        yield ControlPlaneOperator(api_url, fleet.control_plane)
    finally:
        if before is None:
            os.environ.pop(NETNS_ENV, None)
        else:
            os.environ[NETNS_ENV] = before


@contextlib.contextmanager
def _served(fleet: LoopbackFleet) -> Iterator[PrefectOperator]:
    """``ppo-dr serve`` for the lab while the block runs, its probe and a mirror running.

    A cold Prefect server (fresh database, migrations) can take longer than serve's
    own start limit on a loaded machine; serve then exits, and the second start finds
    the database migrated. So serve is started at most twice, never more.
    """
    from ppo_dr.lab.chaos.channel_errors import CREDENTIAL_ENV, CREDENTIAL_VALUE
    from ppo_dr.lab.processes import spawn_detached

    home = fleet.lab.directory / "chaos-serve"
    log_file = fleet.lab.directory / "logs" / "chaos-serve.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    state_file = home / "prefect" / "serve.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PPO_DR_"))}
    env |= {"PPO_DR_HOME": str(home), "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    env |= {CREDENTIAL_ENV: CREDENTIAL_VALUE}  # channel-errors' stand-in takes any key
    serve: subprocess.Popen[bytes] | None = None
    operator: PrefectOperator | None = None
    try:  # whatever happens (Ctrl-C while it starts included), serve is stopped
        for attempt in (1, 2):
            # serve claims its port by binding it: a serve started beside it gets another
            command = [sys.executable, "-m", "cli.main", "serve"]
            command += ["--fleet", str(fleet.fleet_file)]
            command += ["--server-timeout", str(SERVER_HEALTHY_S)]
            state_file.unlink(missing_ok=True)  # a stale one from a run that was killed
            with log_file.open("ab") as log:
                offset = log.tell()
                serve = spawn_detached(command, env, log)
            try:
                api_url = _wait_serving(serve, state_file, log_file, offset)
                break
            except LabError as exc:
                _stop(serve)
                if attempt == 2:
                    raise
                typer.echo(f"{exc}; starting it once more (its database is migrated now)")
        typer.echo(f"ppo-dr serve is up (API {api_url}; log {log_file})")
        _start_now(api_url, fleet)
        operator = PrefectOperator(api_url, home)
        yield operator
    finally:
        if serve is not None:
            _stop(serve)
        if operator is not None:
            operator.stop_restarted()


def _wait_serving(
    serve: subprocess.Popen[bytes], state_file: Path, log_file: Path, offset: int
) -> str:
    """The API URL once serve says it serves (in its log after *offset*)."""
    deadline = time.monotonic() + SERVE_START_S
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            raise LabError(f"ppo-dr serve exited ({serve.returncode}); see {log_file}")
        with log_file.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", errors="replace")
        if "serving; Ctrl-C stops" in text and state_file.exists():
            return str(json.loads(state_file.read_text(encoding="utf-8"))["api_url"])
        time.sleep(1.0)
    raise LabError(f"ppo-dr serve did not start within {SERVE_START_S:.0f} s; see {log_file}")


#: Runs started at once when the runbooks are up: the probe (its schedule's next run
#: may be a period off) and the mirrors (the faults wait for every client's first
#: snapshot, and the next cron minute may be a minute off).
PROBE_DEPLOYMENT = "probe-fleet/probe-fleet"


def _start_now(api_url: str, fleet: LoopbackFleet) -> None:
    """A run of the probe and of each mirror deployment of *fleet* now, unless one is
    pending or running."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    from deployments.demo.session import first_run_of, prefect_api

    live = FlowRunFilterState(
        type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
    )
    with prefect_api(api_url) as client:
        for deployment in [PROBE_DEPLOYMENT, *fleet.mirror_deployments()]:
            name = deployment.split("/", 1)[-1]
            if first_run_of(client, name, FlowRunFilter(state=live)) is None:
                _run_of(deployment, {}, 0)


def _stop(serve: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to serve (it pauses its deployments and stops its server), then kill."""
    if serve.poll() is None:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=SERVE_STOP_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=30)
