"""The outage runbooks end to end, in a lab of our own, on a real Prefect server.

Power-kill an app server and follow what an operator would see: the probe flow (a
subprocess, as its deployment would run it) declares ONE incident naming the server's
clients and starts the escalation deployment, which a ``serve`` subprocess runs for
real; level 1 gets SMS and e-mail, nobody acks so level 2 is paged, ``ppo-dr
incident ack`` (the real command, a subprocess) stops the paging; X is told after
``public_after`` and the clients' contacts after ``clients_after``; the server is
healed, a second probe run (a restart mid-outage) sees it recover, the escalation
resolves it after the settle and sends the resolved notices; ``ppo-dr incident
report`` renders Markdown and HTML.

The lab has the ``--fast`` timings (probe every 2 s, outage after 20 s); only the
escalation policy is shortened to seconds. Every wait polls for its condition with a
generous limit, so a loaded 2-core machine makes the test slower, not red.

Already covered elsewhere and not repeated here: the whole DC as one incident and a
probe restart adding nothing (tests/flows/test_probe.py); a second escalation run of
the same incident sending nothing twice (tests/flows/test_escalation.py).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import get_client

from deployments.demo.waiting import wait_for
from ppo_dr.channels import read_outbox
from ppo_dr.errors import LabError
from ppo_dr.escalation import parse_key
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.probe.runner import ESCALATION_STARTED
from ppo_dr.store import Store
from tests.cli.entry import PPO_DR
from tests.flows.escalation_env import two_line_policy
from tests.flows.serving import served
from tests.prefect_fixtures import isolated_env, using_api

pytestmark = [pytest.mark.timeout(420), pytest.mark.lab, pytest.mark.prefect]


#: Seconds, so the whole story fits in about a minute after the outage is declared.
#: Level 1's deadline leaves room for the served run to start on a loaded machine,
#: level 2's for the ``ppo-dr incident ack`` subprocess before round 2 (at 40 s).
POLICY = two_line_policy(second_deadline=25, public_after=20, public_every=10, clients_after=25)

#: One probe flow run, as its deployment would start it (a process of its own, so this
#: test leaves no Prefect client or events worker behind in pytest's process).
RUN_PROBE = (
    "import asyncio, sys\n"
    "from pathlib import Path\n"
    "from flows.probe import probe_fleet\n"
    "asyncio.run(probe_fleet(run_for_s=float(sys.argv[1]), fleet_file=Path(sys.argv[2])))\n"
)


class ProbeRun:
    """One probe flow run in a subprocess against the test's Prefect server."""

    def __init__(self, env: dict[str, str], fleet_file: Path, period_s: float, log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", RUN_PROBE, str(period_s), str(fleet_file)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def finish(self, timeout: float) -> None:
        """Wait for the run to end (its period is over); it must have succeeded."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the probe run did not end; see {self.log}") from None
        tail = self.output()[-3000:]
        assert code == 0, f"the probe run failed ({code}):\n{tail}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def outage_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A small lab of our own (other tests share the session lab): we kill its servers."""
    lab = Lab(Path(tmp_path_factory.mktemp("outage-lab")) / "lab")
    try:
        lab.up(clients=4, size_mb=2, fast=True, timeout=60.0)
        doc = yaml.safe_load(lab.fleet_file.read_text(encoding="utf-8"))
        doc["escalation"] = POLICY
        lab.fleet_file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        yield lab
    finally:
        lab.down()


@pytest.fixture
def served_escalation(
    outage_lab: Lab, prefect_server: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """``escalation/escalation`` served by a subprocess against the real server; the
    environment the ``ppo-dr`` commands of the test use."""
    env = isolated_env(
        PREFECT_API_URL=prefect_server,
        PPO_DR_FLEET=str(outage_lab.fleet_file),
        PPO_DR_HOME=str(tmp_path / "home"),
        PREFECT_RUNNER_POLL_FREQUENCY="1",  # the runner looks for new runs every second
    )
    with served("escalation_deployment", env, tmp_path / "serve.log"):
        yield env


def ppo_dr(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [*PPO_DR, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"ppo-dr {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def steps(outbox: Path, incident_id: int) -> list[tuple[str, str, str]]:
    """(step, recipient address, channel) of every message of the incident, in order."""
    out = []
    for line in read_outbox(outbox):
        key = parse_key(line["key"])
        if key is not None and key.incident_id == incident_id:
            out.append((key.step, line["recipient"], line["channel"]))
    return out


def test_power_kill_pages_escalates_informs_and_resolves(
    outage_lab: Lab,
    prefect_server: str,
    served_escalation: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lab = outage_lab
    monkeypatch.delenv("PPO_DR_DB_URL", raising=False)  # the lab's own store
    fleet: Fleet = load_fleet(lab.fleet_file)
    server = fleet.servers_by_role("app")[0].id
    clients = sorted(c.id for c in fleet.clients if c.server == server)
    assert clients, f"no client on {server}"
    people = {p.id: p for p in fleet.people}
    level_1 = {people[p].sms for p in ("sipho", "anna")} | {
        people[p].email for p in ("sipho", "anna")
    }
    level_2 = {people["james"].sms, people["james"].email}
    contacts = {k.email for c in fleet.clients if c.id in clients for k in c.contacts}
    outbox = lab.directory / "outbox.jsonl"
    env = served_escalation

    with using_api(prefect_server), Store(lab.store_url) as store:
        # Run 1 of the probe: sees everything up, then the power cut.
        first = ProbeRun(env, lab.fleet_file, 55, tmp_path / "probe-1.log")
        healed = False
        try:
            # The run has started (it logs that) and checked everything up at least twice.
            wait_for("the probe run to start", lambda: "Beginning flow run" in first.output())
            time.sleep(2 * fleet.timing.probe_interval + 1)
            fault_at = datetime.now(UTC)
            lab.break_(server, "power")

            # ONE incident, naming the server's clients (not one per client).
            incidents = wait_for("the outage to be declared", store.incidents, timeout=60)
            assert len(incidents) == 1, incidents
            incident = incidents[0]
            assert incident.dedupe_key == f"outage:server:{server}"
            assert incident.scope["clients"] == clients
            assert incident.opened_at > fault_at
            iid = incident.id

            # Level 1 at once: SMS and e-mail, nobody else yet.
            def sent_to() -> set[str]:
                return {to for _, to, _ in steps(outbox, iid)}

            wait_for("level-1 SMS and e-mail", lambda: sent_to() >= level_1, timeout=60)
            assert {ch for _, to, ch in steps(outbox, iid) if to in level_1} == {"sms", "email"}
            # No ack within 15 s: level 2.
            wait_for("level 2", lambda: sent_to() >= level_2, timeout=45)

            # The ack from the terminal stops the paging.
            out = ppo_dr(env, "incident", "ack", str(iid), "--by", "anna", "--note", "on it")
            assert "acknowledged by anna" in out, out
            acked = store.incident(iid)
            assert acked is not None and acked.acknowledged_by == "anna"
            pages_at_ack = {s for s, _, _ in steps(outbox, iid) if s.startswith("page.")}

            # Users on X after public_after; client contacts after clients_after.
            wait_for("the X post", lambda: "public" in sent_to(), timeout=45)
            wait_for("the client e-mails", lambda: sent_to() >= contacts, timeout=45)
            posts = [line for line in read_outbox(outbox) if line["channel"] == "x"]
            for post in posts:
                assert len(post["body"]) <= 280
                assert server not in post["body"]
                assert not any(c in post["body"] for c in clients)
            # The ladder's second round (level 1 again at 40 s) never came: acked.
            wait_for("41 s after opening", lambda: _age(acked.opened_at) > 41, timeout=50)
            pages = {s for s, _, _ in steps(outbox, iid) if s.startswith("page.")}
            assert pages == pages_at_ack, pages - pages_at_ack
            assert not any(".r1." in s for s in pages), pages
            first.finish(timeout=90)

            heal(lab, server)
            healed = True
        finally:
            first.stop()
            if not healed:
                heal(lab, server)

        # Run 2 of the probe (a restart mid-outage) sees the server back.
        second = ProbeRun(env, lab.fleet_file, 30, tmp_path / "probe-2.log")
        try:
            wait_for(
                "the incident to recover",
                lambda: (i := store.incident(iid)) is not None and i.recovered_at is not None,
                timeout=45,
            )
            # Settle (public_every) without a relapse: the escalation resolves it.
            wait_for(
                "the escalation to resolve the incident",
                lambda: (i := store.incident(iid)) is not None and i.state == "resolved",
                timeout=60,
            )

            def resolved_to() -> set[str]:
                return {to for s, to, _ in steps(outbox, iid) if "resolved" in s}

            everyone = level_1 | level_2 | contacts | {"public"}
            wait_for("every resolved notice", lambda: resolved_to() >= everyone, timeout=45)
            second.finish(timeout=90)
        finally:
            second.stop()

        assert len(store.incidents()) == 1, store.incidents()
        keys = [line["key"] for line in read_outbox(outbox)]
        assert len(keys) == len(set(keys)), "a notice was sent twice"
        assert all(n.status == "sent" for n in store.notices(iid))
        timeline = store.timeline(iid)
        kinds = {e.kind for e in timeline}
        assert {"declared", "acknowledged", "probe-recovered", "resolved"} <= kinds, kinds
        # The probe started one escalation run (its entry names the run), and only
        # that run worked the incident (the flow's own entries carry its run id).
        asked = [e for e in timeline if "escalation_flow_run_id" in e.data]
        assert len(asked) == 1, asked
        run_id = asked[0].data["escalation_flow_run_id"]
        ran = {e.flow_run_id for e in timeline if e.kind == ESCALATION_STARTED} - {
            asked[0].flow_run_id
        }
        assert ran == {run_id}, ran
        with get_client(sync_client=True) as client:

            def completed() -> bool:
                state = client.read_flow_run(UUID(run_id)).state
                return state is not None and state.is_completed()

            wait_for("the escalation run to complete", completed, timeout=60)
            run = client.read_flow_run(UUID(run_id))
        # One name, from its creation (the probe's log says it too), and a run of its
        # own, not a subflow of the probe ("Hide subflows" in the UI must not hide it).
        assert run.name == f"escalation-incident-{iid}"
        assert run.parent_task_run_id is None, run.parent_task_run_id
        assert f"flow run {run_id} ({run.name})" in first.output()

    # The report renders, as Markdown and as HTML.
    markdown = tmp_path / "report.md"
    html = tmp_path / "report.html"
    ppo_dr(env, "incident", "report", str(iid), "-o", str(markdown))
    ppo_dr(env, "incident", "report", str(iid), "-o", str(html))
    text = markdown.read_text(encoding="utf-8")
    assert "## Timeline" in text and server in text
    assert all(c in text for c in clients)
    assert "<h2>Timeline</h2>" in html.read_text(encoding="utf-8")


def heal(lab: Lab, server: str) -> None:
    """Heal *server*; once more if its restart failed (on a machine shared with other
    labs, a port can be taken in the instant it was free: the lab says so)."""
    try:
        lab.heal(server)
    except LabError as exc:
        print(f"heal of {server} failed once, retrying: {exc}")
        time.sleep(2)
        lab.heal(server)


def _age(at: datetime) -> float:
    return (datetime.now(UTC) - at).total_seconds()
