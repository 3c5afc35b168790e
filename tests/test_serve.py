"""``ppo-dr serve``, run as the operator runs it: a subprocess, real Prefect servers.

What must hold: ``--check`` starts a server, creates the concurrency limits,
registers the deployments and leaves no server behind; Ctrl-C (and SIGTERM) stop
serving and the server ``serve`` started; with ``PREFECT_API_URL`` set, ``serve``
starts no server of its own, its deployment runs for real, and the server it was
given outlives it.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from deployments import local_server
from ppo_dr.pids import alive
from tests.cli.entry import PPO_DR
from tests.prefect_fixtures import isolated_env, using_api

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fleet.yaml"
#: (flow, deployment, paused) of every deployment serve registers, sorted.
SERVED = [
    ("dr-drill", "dr-drill", 1),
    ("drain", "drain", 1),
    ("escalation", "escalation", 1),
    ("failover", "failover", 1),
    ("fleet-report", "fleet-report", 1),
    ("mirror-fleet", "mirror-fleet", 1),
    ("mirror-server", "mirror-server", 1),
    ("probe-fleet", "probe-fleet", 1),
    ("probe-watchdog", "probe-watchdog", 1),
    ("rebalance", "rebalance", 1),
]
STAMP = r"\d{4}-\d{2}-\d{2}T\d{6}Z"
#: The heartbeat automation serve creates for the example fleet (ppo-prod).
AUTOMATION = "ppo-dr probe heartbeat: ppo-prod"

# Every test here starts (or needs) a real Prefect server: slow, so `-m "not prefect"` skips.
pytestmark = pytest.mark.prefect


# --------------------------------------------------------------------------- helpers


def listening(port: int) -> bool:
    """True if something on 127.0.0.1 accepts connections on *port*."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def serve_check(
    *args: str, env: dict[str, str], timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``ppo-dr serve --check ARGS``, run to its end, its output captured."""
    return subprocess.run(
        [*PPO_DR, "serve", "--check", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def server_pid(output: str) -> int:
    match = re.search(r"Prefect server: starting on [\d.]+:\d+ \(pid (\d+)\)", output)
    assert match, output
    return int(match.group(1))


def server_port(output: str) -> int:
    match = re.search(r"Prefect server: starting on [\d.]+:(\d+) ", output)
    assert match, output
    return int(match.group(1))


def read_db(home: Path, sql: str) -> list[tuple[object, ...]]:
    """Query the Prefect server's SQLite database that serve left in *home*."""
    with sqlite3.connect(home / "prefect" / "prefect.db") as db:
        return db.execute(sql).fetchall()


def deployments_in(home: Path) -> list[tuple[object, ...]]:
    return read_db(
        home,
        "SELECT f.name, d.name, d.paused FROM deployment d JOIN flow f ON d.flow_id = f.id",
    )


def loopback_example(tmp_path: Path) -> Path:
    """The example fleet with every ``*.ppo.example`` host on a loopback address of its
    own (127.0.1.x, where nothing listens): a probe run that serve starts checks those,
    never a name the resolver would be asked for; its outage threshold an hour."""
    hosts: dict[str, str] = {}

    def loopback(match: re.Match[str]) -> str:
        return hosts.setdefault(match.group(0), f"127.0.1.{len(hosts) + 1}")

    # And no outage within the test: nothing is paged through the example's channels.
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        "outage_threshold: 3m", "outage_threshold: 1h"
    )
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(re.sub(r"[a-z0-9.-]+\.ppo\.example", loopback, text), encoding="utf-8")
    return fleet


class Served:
    """``ppo-dr serve`` as a subprocess whose output is collected line by line."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [*PPO_DR, "serve", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._pump, args=(self.process.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    @property
    def output(self) -> str:
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in "".join(self.lines):
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} after {timeout} s:\n{self.output}") from None
            if line is None:
                raise AssertionError(f"serve exited before {text!r}:\n{self.output}")
            self.lines.append(line)

    def stop(self, signum: int = signal.SIGINT, timeout: float = 60.0) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def serve_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PPO_DR_HOME for this module's own-server tests: cold first, warm after."""
    return tmp_path_factory.mktemp("ppo-dr-home")


@pytest.fixture
def served() -> Iterator[list[Served]]:
    """Collects the serve processes a test starts; kills any still running at the end."""
    started: list[Served] = []
    yield started
    for item in started:
        item.kill()


# --------------------------------------------------------------------------- tests


def test_check_registers_everything_and_leaves_no_server(serve_home: Path) -> None:
    env = isolated_env(PPO_DR_HOME=str(serve_home))
    timings = []
    for attempt in ("cold", "warm"):
        port = local_server.free_port()
        started = time.monotonic()
        done = serve_check(
            "--fleet", str(EXAMPLE), "--port", str(port), env=env, cwd=ROOT, timeout=180
        )
        timings.append(f"{attempt} {time.monotonic() - started:.1f} s")
        assert done.returncode == 0, done.stdout + done.stderr
        pid = server_pid(done.stdout)
        assert not alive(pid), f"prefect server pid {pid} outlived serve --check"
        assert not listening(port)
        assert f"Prefect server: stopped (pid {pid})" in done.stdout
        assert "fleet-report/fleet-report: cron '0 6 * * *'" in done.stdout
        assert "mirror-fleet/mirror-fleet: cron '0 * * * *'" in done.stdout
        assert f"check: OK, {len(SERVED)} deployment(s) registered" in done.stdout
        expected = "created" if attempt == "cold" else "unchanged"
        assert f"reports: 2 slot(s) ({expected})" in done.stdout
        assert f"automation: {AUTOMATION} ({expected})" in done.stdout

    print(f"\nserve --check: {', '.join(timings)}")
    # What the server recorded, read from the database it left in our home.
    assert sorted(deployments_in(serve_home)) == SERVED
    # The heartbeat automation exists, off like the deployments (nothing serves them).
    assert read_db(serve_home, "SELECT name, enabled FROM automation") == [(AUTOMATION, 0)]
    # Prefect keeps a deployment's own limit as a "deployment:<id>" row beside ours.
    limits = read_db(serve_home, 'SELECT name, "limit", active FROM concurrency_limit_v2')
    ours = sorted(r for r in limits if not str(r[0]).startswith("deployment:"))
    mirror = [(f"mirror-dc-{dc}", 2, 1) for dc in ("cpt1", "jhb1", "lon1")] + [
        (f"mirror-server-app-{s}", 1, 1) for s in ("cpt1-1", "jhb1-1", "jhb1-2", "lon1-1")
    ]
    assert ours == sorted([("dr-drill", 1, 1), ("failover", 1, 1), ("reports", 2, 1), *mirror])
    # One-at-a-time deployments: fleet-report, mirror-fleet, probe-watchdog, dr-drill (these
    # cancel a new run), probe-fleet two at a time (old run and successor at a hand-over);
    # failover takes the global "failover" after approval.
    assert sorted(r[1:] for r in limits if r not in ours) == [(1, 1)] * 4 + [(2, 1)]
    log = (serve_home / "logs" / "prefect-server.log").read_text()
    assert log.count("--- ppo-dr serve (pid") == 2


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_stops_serving_and_the_server(
    serve_home: Path, served: list[Served], signum: int
) -> None:
    port = local_server.free_port()
    serve = Served("--port", str(port), env=isolated_env(PPO_DR_HOME=str(serve_home)))
    served.append(serve)
    serve.wait_for("serving; Ctrl-C stops")
    pid = server_pid(serve.output)
    assert alive(pid)
    assert f"Prefect UI: http://127.0.0.1:{port}" in serve.output
    state = serve_home / "prefect" / "serve.json"
    assert f'"api_url": "http://127.0.0.1:{port}/api"' in state.read_text()

    # A second serve on the same home would share the database: refused.
    second = serve_check(
        "--port", str(local_server.free_port()), env=isolated_env(PPO_DR_HOME=str(serve_home))
    )
    assert second.returncode == 2
    assert f"ppo-dr serve (pid {serve.process.pid}) already runs a Prefect server" in second.stderr

    started = time.monotonic()
    code = serve.stop(signum)
    took = time.monotonic() - started

    assert code == 0, serve.output
    assert not alive(pid), f"prefect server pid {pid} outlived serve"
    assert not listening(port)
    assert not state.exists()
    assert f"Prefect server: stopped (pid {pid})" in serve.output
    # Prefect's runner paused the deployment before the server went away. (CI once saw
    # fleet-report left unpaused, with no output kept to say why: it is shown now.)
    assert sorted(deployments_in(serve_home)) == SERVED, serve.output
    print(f"\nserve stopped by {signal.Signals(signum).name} in {took:.1f} s")


def test_a_killed_serve_takes_its_server_with_it(serve_home: Path, served: list[Served]) -> None:
    port = local_server.free_port()
    serve = Served("--port", str(port), env=isolated_env(PPO_DR_HOME=str(serve_home)))
    served.append(serve)
    serve.wait_for("Prefect server: healthy")
    pid = server_pid(serve.output)

    serve.process.kill()  # no clean-up runs: the kernel tells the server (PDEATHSIG)
    serve.process.wait(timeout=10)

    # The port closes when the last holder of the listening socket exits, which can be
    # a moment after the server's own pid (CI once saw it open after the pid was gone).
    deadline = time.monotonic() + 20
    while (alive(pid) or listening(port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid), f"prefect server pid {pid} outlived a killed serve"
    assert not listening(port), f"port {port} still open 20 s after serve was killed"


def test_two_serves_started_together_get_a_server_each(
    tmp_path: Path, served: list[Served]
) -> None:
    """No --port: both want 4200; the one that binds it first keeps it, and the other
    serves on a port of its own rather than on the first one's server."""
    homes = [tmp_path / "one", tmp_path / "two"]
    pair = [Served(env=isolated_env(PPO_DR_HOME=str(home))) for home in homes]
    served.extend(pair)
    for serve in pair:
        serve.wait_for("serving; Ctrl-C stops", timeout=240)
    ports = [server_port(serve.output) for serve in pair]
    assert ports[0] != ports[1], [serve.output for serve in pair]
    for home, port in zip(homes, ports, strict=True):
        state = (home / "prefect" / "serve.json").read_text()
        assert f'"api_url": "http://127.0.0.1:{port}/api"' in state

    # Each API is its own server's: stopping one leaves the other answering.
    pid = server_pid(pair[0].output)
    assert pair[0].stop() == 0, pair[0].output
    assert not alive(pid)
    assert not listening(ports[0])
    assert local_server.api_is_healthy(f"http://127.0.0.1:{ports[1]}/api")


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    env = isolated_env(
        PPO_DR_HOME=str(tmp_path),
        PREFECT_SERVER_DATABASE_CONNECTION_URL="postgresql+asyncpg://ppo@127.0.0.1:1/none",
    )
    port = local_server.free_port()
    done = serve_check("--port", str(port), env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: the Prefect server exited with code" in done.stderr
    assert "last lines of" in done.stderr and "prefect-server.log" in done.stderr
    assert "Traceback" not in done.stderr.split("last lines of")[0]  # ours is one line
    assert not alive(server_pid(done.stdout))
    assert not listening(port)


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve_check("--port", str(port), env=isolated_env(PPO_DR_HOME=str(tmp_path)))
    assert done.returncode == 2
    assert f"error: port {port} on 127.0.0.1 is in use" in done.stderr
    assert "Prefect server: starting" not in done.stdout


def test_serve_on_a_given_api_runs_the_deployment_and_leaves_the_server(
    prefect_server: str, served: list[Served], tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import FlowRun, StateType
    from prefect.deployments import run_deployment

    env = isolated_env(
        PPO_DR_HOME=str(tmp_path),
        PREFECT_API_URL=prefect_server,
        PREFECT_RUNNER_POLL_FREQUENCY="2",  # default 10 s: how soon an ad-hoc run starts
    )
    serve = Served("--fleet", str(loopback_example(tmp_path)), env=env)
    served.append(serve)
    serve.wait_for("serving; Ctrl-C stops")
    assert "Prefect server: starting" not in serve.output
    assert f"Prefect UI: {prefect_server.removesuffix('/api')}" in serve.output

    with using_api(prefect_server), get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("reports")
        assert (limit.limit, limit.active) == (2, True)
        [automation] = client.read_automations_by_name(AUTOMATION)
        assert automation.enabled, serve.output

        # The probe's schedule would first fire a period (10 minutes) after
        # registration: serve starts a run at once (it probes 127.0.1.x: nothing there).
        started_now = re.search(r"probe: run (\S+) started now", serve.output)
        assert started_now, serve.output
        probes = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["probe-fleet"]))
        )
        assert started_now.group(1) in {r.name for r in probes}

        # The served deployment runs for real, in a process the runner starts.
        started = time.monotonic()
        run = run_deployment("fleet-report/fleet-report", timeout=120, poll_interval=1)
        took = time.monotonic() - started
        assert isinstance(run, FlowRun)
        assert run.state is not None and run.state.is_completed(), (run.state, serve.output)
        assert re.fullmatch(rf"fleet-report-ppo-prod-{STAMP}", run.name), run.name
        assert {"fleet:ppo-prod", "ppo-dr", "report"} <= set(run.tags)

        # The server's scheduler has put the next 06:00 UTC runs on the calendar.
        def scheduled() -> list[FlowRun]:
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=["fleet-report"])
                ),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    )
                ),
            )

        deadline = time.monotonic() + 30
        while not scheduled() and time.monotonic() < deadline:
            time.sleep(0.5)
        upcoming = scheduled()
        assert upcoming, "no scheduled fleet-report runs"
        assert all(r.expected_start_time and r.expected_start_time.hour == 6 for r in upcoming)

        assert serve.stop(signal.SIGINT) == 0, serve.output
        deployment = client.read_deployment_by_name("fleet-report/fleet-report")
        assert deployment.paused
        [automation] = client.read_automations_by_name(AUTOMATION)
        assert not automation.enabled, "nobody serves probe-watchdog: the automation is off"

    assert local_server.api_is_healthy(prefect_server), "serve stopped a server it did not start"
    print(f"\nserved fleet-report run completed in {took:.1f} s (run_deployment)")
    assert os.environ.get("PREFECT_API_URL") != prefect_server  # nothing leaked into us


def test_probe_heartbeat_automation_is_idempotent_and_fires_when_heartbeats_stop(
    prefect_server: str,
) -> None:
    """The automation ``serve`` creates, against a real server: created once, updated
    in place; quiet while heartbeats arrive; runs probe-watchdog once they stop.

    A 5 s probe period gives Prefect's shortest window (10 s); the fleet name is unique,
    so nothing else on the session's server heartbeats for it.
    """
    import asyncio
    import uuid
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient
    from prefect.events.schemas.automations import Posture
    from prefect.exceptions import ObjectNotFound

    from deployments.automations import ensure_automation, probe_heartbeat_automation
    from tasks.probe import HEARTBEAT_EVENT, heartbeat_resource

    fleet = f"auto-{uuid.uuid4().hex[:8]}"

    async def heartbeat() -> None:
        async with PrefectEventsClient(api_url=prefect_server) as events:
            await events.emit(
                Event(
                    occurred=datetime.now(UTC),
                    event=HEARTBEAT_EVENT,
                    resource={"prefect.resource.id": heartbeat_resource(fleet)},
                    payload={"cycle": 1},
                )
            )

    with using_api(prefect_server), get_client(sync_client=True) as client:
        try:
            watchdog = client.read_deployment_by_name("probe-watchdog/probe-watchdog").id
        except ObjectNotFound:  # a stand-in without a runner: its runs stay scheduled
            flow_id = client.create_flow_from_name("probe-watchdog")
            watchdog = client.create_deployment(flow_id=flow_id, name="probe-watchdog")

        def runs() -> list[object]:
            found = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[watchdog]))
            )
            return [r for r in found if r.parameters.get("silent_after_s") == 5.0]

        assert ensure_automation(probe_heartbeat_automation(fleet, 60, watchdog)) == "created"
        try:
            automation = probe_heartbeat_automation(fleet, 5, watchdog)
            assert ensure_automation(automation) == "updated"
            assert ensure_automation(automation) == "unchanged"
            [stored] = client.read_automations_by_name(automation.name)
            trigger = stored.trigger
            assert trigger.posture == Posture.Proactive  # type: ignore[union-attr]
            assert trigger.expect == {HEARTBEAT_EVENT}  # type: ignore[union-attr]
            assert trigger.within.total_seconds() == 10  # type: ignore[union-attr]
            [action] = stored.actions
            assert action.deployment_id == watchdog  # type: ignore[union-attr]
            before = len(runs())

            # Heartbeats every 2 s for three windows: the server stays quiet.
            for _ in range(15):
                asyncio.run(heartbeat())
                time.sleep(2)
            assert len(runs()) == before, "fired while the probe was heartbeating"

            # Silence: the server runs the watchdog (within a window and its ~2 s lag).
            started = time.monotonic()
            deadline = started + 90
            while len(runs()) == before and time.monotonic() < deadline:
                time.sleep(1)
            assert len(runs()) > before, "no probe-watchdog run after 90 s of silence"
            print(f"\nautomation fired {time.monotonic() - started:.1f} s after the last beat")
        finally:
            for found in client.read_automations_by_name(f"ppo-dr probe heartbeat: {fleet}"):
                client.delete_automation(found.id)


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        (None, local_server.SERVER_START_TIMEOUT),
        ("240", 240.0),
        ("0", 1.0),
        ("soon", local_server.SERVER_START_TIMEOUT),
    ],
)
def test_the_server_start_limit_comes_from_the_environment_when_it_is_a_number(
    monkeypatch: pytest.MonkeyPatch, value: str | None, limit: float
) -> None:
    if value is None:
        monkeypatch.delenv(local_server.START_TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(local_server.START_TIMEOUT_ENV, value)
    assert local_server.server_start_timeout() == limit
