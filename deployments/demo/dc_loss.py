"""A whole data centre lost in the namespaced lab: what the distributed story and its
test both do and check, against the HA control plane's API (as the host sees it).

The host has no route into the lab's networks (10.n): every mirror runs through its
deployment on the DC's worker, and every client is checked from inside the ``wan``
namespace (:func:`ppo_dr.lab.netns.call_in`), where the front door listens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from deployments.demo.narrator import get
from deployments.demo.session import first_run_of, prefect_api, running_probe_run
from deployments.demo.waiting import wait_for
from ppo_dr.errors import PermanentError
from ppo_dr.inventory import Fleet
from ppo_dr.lab import netns
from ppo_dr.lab.lost_writes import record_lost_writes
from ppo_dr.lab.supervisor import Lab
from ppo_dr.lab.workload import read_acks
from ppo_dr.probe.graph import outage_key
from ppo_dr.probe.pools import UNATTENDED_KIND
from ppo_dr.store import FailoverResult, Incident, Store

#: What the lab's escalation policy says before the story turns automatic failover on.
MANUAL_FAILOVER = "auto_failover: false"
#: Limits of what is waited for on a shared 2-core machine.
MIRROR_TIMEOUT_S = 300.0
PROBE_TIMEOUT_S = 240.0
DECLARE_TIMEOUT_S = 180.0
FAILOVER_TIMEOUT_S = 480.0
UNATTENDED_TIMEOUT_S = 300.0
WORKER_LABEL = "prefect.worker.name"


class StoryFailed(PermanentError):
    """A run of the story ended otherwise than the runbooks promise."""


def turn_on_auto_failover(lab: Lab) -> None:
    """The lab's policy pauses a failover for approval; this story approves in advance."""
    text = lab.fleet_file.read_text(encoding="utf-8")
    if text.count(MANUAL_FAILOVER) != 1:
        raise StoryFailed(f"{lab.fleet_file}: expected one {MANUAL_FAILOVER!r}")
    lab.fleet_file.write_text(text.replace(MANUAL_FAILOVER, "auto_failover: true"))


def mirror_every_app_server(
    api_url: str, fleet: Fleet, say: Callable[[str], None]
) -> dict[str, str]:
    """Run each app server's mirror deployment now and wait until one run of each has
    Completed; server -> the worker that ran it. A run cancelled because a scheduled
    one was running (one at a time) is started again."""
    names = {s.id: f"mirror-server/mirror-{s.id}" for s in fleet.servers_by_role("app")}
    with prefect_api(api_url) as client:
        runs = {sid: _start(name) for sid, name in names.items()}
        done: dict[str, str] = {}
        deadline = time.monotonic() + MIRROR_TIMEOUT_S
        while len(done) < len(runs):
            if time.monotonic() > deadline:
                raise StoryFailed(f"mirrors not completed in time: {sorted(set(runs) - set(done))}")
            for sid, run in list(runs.items()):
                if sid in done:
                    continue
                now = client.read_flow_run(run.id)
                state = now.state
                if state is None or not state.is_final():
                    continue
                if state.is_completed():
                    done[sid] = (now.labels or {}).get(WORKER_LABEL, "?")
                    say(f"   {now.name}: Completed on {done[sid]}")
                elif state.is_cancelled():
                    runs[sid] = _start(names[sid])
                else:
                    raise StoryFailed(f"{now.name}: {state.name}: {state.message}")
            time.sleep(1.0)
    return done


def _start(deployment: str) -> Any:
    """A run of *deployment*, not waited for."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, timeout=0)
    assert isinstance(run, FlowRun)  # the sync form, not a coroutine
    return run


def wait_for_probe(api_url: str) -> Any:
    """The running probe-fleet run (its worker label tells where it runs)."""
    with prefect_api(api_url) as client:
        return wait_for(
            "a running probe-fleet run on a control worker",
            lambda: _labelled(running_probe_run(client)),
            PROBE_TIMEOUT_S,
            every=1.0,
        )


def _labelled(run: Any) -> Any:
    return run if run is not None and WORKER_LABEL in (run.labels or {}) else None


def dc_incidents(store: Store, dc: str) -> list[Incident]:
    """Every outage incident of data centre *dc* in the store."""
    return [i for i in store.incidents(kind="outage") if i.dedupe_key == outage_key("dc", dc)]


def wait_for_dc_incident(store: Store, dc: str) -> Incident:
    found = wait_for(f"the {dc} incident", lambda: dc_incidents(store, dc), DECLARE_TIMEOUT_S)
    return found[0]


def wait_for_unattended_pool(store: Store) -> Incident:
    """The first open non-paging incident of a pool nobody serves (the probe checks
    once a minute, and not at all between its runs)."""
    found = wait_for(
        "the unattended-pool incident",
        lambda: store.incidents(states=("open",), kind=UNATTENDED_KIND),
        UNATTENDED_TIMEOUT_S,
    )
    return found[0]


def failover_run(api_url: str, incident_id: int) -> Any:
    """The incident's failover run once it has ended (the escalation started it)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    tagged = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"incident:{incident_id}"]))
    with prefect_api(api_url) as client:

        def ended() -> Any:
            run = first_run_of(client, "failover", tagged)
            return run if run is not None and run.state and run.state.is_final() else None

        return wait_for(f"incident {incident_id}'s failover", ended, FAILOVER_TIMEOUT_S, 2.0)


def answer_through_front_door(lab: Lab, fleet: Fleet, client_id: str) -> tuple[int | str, str]:
    """(status, serving server) of the client's health page, asked from the wan."""
    net = lab.network()
    url = str(fleet.client(client_id).url).rstrip("/") + "/health"
    return netns.call_in(net.wan if net else None, lambda: get(url))


@dataclass(frozen=True)
class WritesCheck:
    """One moved client's data loss against what the restored snapshot could hold."""

    client: str
    lost: int
    acked_after_snapshot: int


def count_lost_writes(lab: Lab, plan_id: str) -> dict[str, int]:
    """The lab's own measure of the writes each moved client lost (not the runbook's),
    recorded on the plan's results; each new home is read from the wan, where the
    servers answer, and the store from here (the host reaches it through HAProxy)."""
    net = lab.network()
    wan = net.wan if net else None
    return record_lost_writes(lab.fleet_file, plan_id, lambda work: netns.call_in(wan, work))


def writes_check(acks: Path, incident: Incident, result: FailoverResult) -> WritesCheck:
    """Writes the old home acknowledged after the restored snapshot was taken (its age
    at the declaration is the result's RPO): the most a restore from it can lose."""
    if result.rpo_seconds is None or result.lost_writes is None:
        raise StoryFailed(f"{result.client_id}: no RPO or lost-writes count recorded")
    opened = incident.opened_at
    taken = (opened if opened.tzinfo else opened.replace(tzinfo=UTC)) - timedelta(
        seconds=result.rpo_seconds
    )
    after = [
        a
        for a in read_acks(acks)
        if a["client"] == result.client_id
        and a.get("server") == result.from_server
        and datetime.fromisoformat(str(a["ts"])) > taken
    ]
    return WritesCheck(result.client_id, result.lost_writes, len(after))
