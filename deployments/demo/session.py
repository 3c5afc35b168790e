"""What the outage scenes share: :class:`OutageDemo`, ``ppo-dr serve`` started and
stopped, the served Prefect API, and ``ppo-dr`` run as an operator would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from deployments.demo.narrator import next_step, say
from deployments.demo.waiting import wait_for
from ppo_dr.channels import read_outbox
from ppo_dr.escalation import parse_key
from ppo_dr.inventory import Fleet
from ppo_dr.lab.processes import is_alive
from ppo_dr.lab.supervisor import Lab
from ppo_dr.store import Incident, Store

#: Limits for what the story waits for: generous, a shared 2-core machine is slow.
SERVE_TIMEOUT_S = 180.0
DECLARE_TIMEOUT_S = 120.0
NOTICE_TIMEOUT_S = 120.0
RESOLVE_TIMEOUT_S = 180.0
FAILOVER_TIMEOUT_S = 300.0
APPROVAL_NOTICE_TIMEOUT_S = 30.0


@dataclass
class OutageDemo:
    """What the outage steps share: the lab, the served Prefect API, the incident."""

    lab: Lab
    fleet: Fleet
    store: Store
    home: Path
    victim: str
    clients: list[str]
    serve: subprocess.Popen[bytes] | None = None
    serve_log: Path | None = None
    api_url: str = ""
    server_pid: int | None = None
    incident: Incident | None = None
    fault_at: datetime | None = None
    escalation_run_id: str = ""
    shown: set[str] = field(default_factory=set)
    served_by: dict[str, str] = field(default_factory=dict)  # before the power cut
    failover_run_id: str = ""
    plan_id: str = ""
    new_home: str = ""
    window_id: str = ""  # the maintenance window of the dead server's repair

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    @property
    def outbox(self) -> Path:
        return Path(self.fleet.channels.outbox or self.lab.directory / "outbox.jsonl")

    @property
    def incident_id(self) -> int:
        assert self.incident is not None, "the probe has not declared the incident yet"
        return self.incident.id

    def step(self, title: str, text: str = "") -> None:
        say(f"{next_step()}. {title}", text)

    def ui(self, page: str, path: str = "") -> None:
        print(f"   Prefect UI: {page}  ->  {self.ui_url}{path}")

    def notices(self) -> list[dict[str, Any]]:
        """The outbox lines of this incident, oldest first."""
        if self.incident is None:
            return []
        out = []
        for line in read_outbox(self.outbox):
            key = parse_key(line.get("key", ""))
            if key is not None and key.incident_id == self.incident.id:
                out.append({**line, "step": key.step})
        return out

    def show_new(self, steps: Callable[[str], bool]) -> list[dict[str, Any]]:
        """Print (once) the incident's messages whose step passes *steps*."""
        fresh = [n for n in self.notices() if steps(n["step"]) and n["key"] not in self.shown]
        for n in fresh:
            self.shown.add(n["key"])
            text = n.get("body") if n["channel"] == "x" else n.get("subject") or n.get("body")
            first = (str(text or "").splitlines() or [""])[0][:100]
            print(f"   outbox: {n['channel']:5} to {n['recipient']:28} {first}")
        return fresh

    def run_url(self, flow_run_id: str) -> str:
        return f"/runs/flow-run/{flow_run_id}"


@contextlib.contextmanager
def prefect_api(api_url: str) -> Iterator[Any]:
    """A Prefect client for the served API (this process has no PREFECT_API_URL)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def first_run_of(client: Any, deployment: str, flow_run_filter: Any) -> Any:
    """The first flow run of *deployment* that passes *flow_run_filter*, if any."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
        flow_run_filter=flow_run_filter,
    )
    return runs[0] if runs else None


def running_probe_run(client: Any) -> Any:
    """The running probe-fleet run, if any."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    running = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
    return first_run_of(client, "probe-fleet", FlowRunFilter(state=running))


def start_serve(demo: OutageDemo) -> None:
    """``ppo-dr serve`` in a subprocess: a local Prefect server and every deployment."""
    demo.step(
        "Start ppo-dr serve: a local Prefect server and every runbook's deployment",
        "the same command an operator runs; its own Prefect database under the demo lab",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PPO_DR_"))}
    env |= {"PPO_DR_HOME": str(demo.home), "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    demo.serve_log = demo.home / "logs" / "serve.log"
    demo.serve_log.parent.mkdir(parents=True, exist_ok=True)
    with demo.serve_log.open("wb") as log:
        demo.serve = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--fleet", str(demo.lab.fleet_file)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state_file = demo.home / "prefect" / "serve.json"

    def serving() -> bool:
        if demo.serve is not None and demo.serve.poll() is not None:
            raise SystemExit(f"demo: ppo-dr serve exited; see {demo.serve_log}")
        text = demo.serve_log.read_text(encoding="utf-8", errors="replace")  # type: ignore[union-attr]
        return "serving; Ctrl-C stops" in text and state_file.exists()

    started = time.monotonic()
    wait_for("ppo-dr serve", serving, SERVE_TIMEOUT_S)
    state = json.loads(state_file.read_text(encoding="utf-8"))
    demo.api_url, demo.server_pid = state["api_url"], state.get("server_pid")
    print(
        f"serving after {time.monotonic() - started:.0f} s: Prefect server pid "
        f"{demo.server_pid}, API {demo.api_url}; serve's log {demo.serve_log}"
    )
    with prefect_api(demo.api_url) as client:
        # The mirror was shown above: pause the scheduled runbooks other than the
        # probe's (with fast timings the mirror runs every minute), so the outage story
        # has this machine to itself. The UI shows them paused; on-demand ones stay.
        paused = []
        for deployment in client.read_deployments():
            if deployment.schedules and deployment.name not in ("probe-fleet", "probe-watchdog"):
                client.pause_deployment(deployment.id)
                paused.append(deployment.name)
        print(f"paused for the story: {', '.join(sorted(paused)) or 'nothing'}")
        from prefect.deployments import run_deployment

        # One run for the whole story (15 minutes, no hand-over in the middle); it
        # takes over from the run serve started at once (the two hand over).
        ours = run_deployment("probe-fleet/probe-fleet", timeout=0, parameters={"period_s": 900})
        assert not isinstance(ours, Coroutine)  # the sync form

        def running() -> Any:
            now = client.read_flow_run(ours.id)
            return now if now.state and now.state.is_running() else None

        run = wait_for("the story's probe-fleet run running", running, 120)
    print(
        f"the probe runs: flow run {run.name} checks every server and client every "
        f"{demo.fleet.timing.probe_interval} s"
    )
    demo.ui("Deployments (probe-fleet, escalation, probe-watchdog, ...)", "/deployments")
    demo.ui(f"Runs -> probe-fleet / {run.name}", demo.run_url(str(run.id)))


def ppo(demo: OutageDemo, *args: str) -> str:
    """Run one ``ppo-dr`` command as an operator would, print it and its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PPO_DR_"))}
    env |= {"PPO_DR_HOME": str(demo.home), "PPO_DR_FLEET": str(demo.lab.fleet_file)}
    if demo.api_url:  # the served API, or the distributed lab's load balancer
        env["PREFECT_API_URL"] = demo.api_url
    print(f"   $ ppo-dr {' '.join(_quote(a) for a in args)}")
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = (done.stdout + done.stderr).strip()
    for line in out.splitlines():
        print(f"     {line}")
    if done.returncode != 0:
        raise SystemExit(f"demo: `ppo-dr {' '.join(args)}` failed (exit {done.returncode})")
    return out


def _quote(arg: str) -> str:
    return f"'{arg}'" if " " in arg else arg


def stop_serve(demo: OutageDemo) -> None:
    """Ctrl-C to serve (it pauses the deployments and stops its server); then check."""
    if demo.serve is None:
        return
    if demo.serve.poll() is None:
        demo.serve.send_signal(signal.SIGINT)
        try:
            demo.serve.wait(timeout=90)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(demo.serve.pid, signal.SIGKILL)
            demo.serve.wait(timeout=30)
    left = [p for p in (demo.serve.pid, demo.server_pid) if p and is_alive(p)]
    print(
        f"ppo-dr serve stopped (exit {demo.serve.returncode}); the Prefect server "
        f"{'is stopped too' if not left else f'STILL RUNNING: {left}'}"
    )
