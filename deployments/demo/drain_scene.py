"""The hardware-upgrade scene: the stop-gap server is drained (every client goes home to
the repaired server by planned migrations), the plan approved by a person, and each
client checked against the workload log: 0 acknowledged writes lost."""

from __future__ import annotations

import re
from typing import Any

from deployments.demo.migration_scenes import moved_back
from deployments.demo.session import FAILOVER_TIMEOUT_S, OutageDemo, ppo, prefect_api
from deployments.demo.waiting import wait_for


def drain_back(demo: OutageDemo) -> None:
    demo.step(
        f"Drain {demo.new_home} for an upgrade: every client home to {demo.victim}, approved",
        "`server drain` plans the planned migrations and refuses one that would strand a\n"
        "client; the drain run pauses for approval, puts the server under maintenance, marks\n"
        "it drained (no plan targets it) and moves the clients: freeze, final sync, switch",
    )
    moved_back(demo, lambda: _drain_and_approve(demo))
    marks = [d for d in demo.store.drained_servers() if d.server_id == demo.new_home]
    print(f"{demo.new_home}: {'drained, under maintenance' if marks else 'NOT MARKED DRAINED'}")


def _drain_and_approve(demo: OutageDemo) -> None:
    shown = ppo(
        demo, "server", "drain", demo.new_home, "--to", demo.victim, "--by", "sipho",
        "--reason", "stop-gap server back to the pool",
    )  # fmt: skip
    found = re.search(r"failover plan ([0-9a-f]{16})", shown)
    if found is None:
        raise SystemExit("demo: `server drain` printed no plan")
    plan_id = found.group(1)
    with prefect_api(demo.api_url) as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

        tagged = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"plan:{plan_id}"]))

        def paused() -> Any:
            runs = client.read_flow_runs(flow_run_filter=tagged)
            return next((r for r in runs if r.state is not None and r.state.is_paused()), None)

        run = wait_for("the drain run to pause for approval", paused, FAILOVER_TIMEOUT_S)
    print(f"drain run {run.name}: paused for approval of plan {plan_id[:12]}")
    demo.ui(
        f"Runs -> {run.name} (Paused; 'Resume' is the approval form)", demo.run_url(str(run.id))
    )
    ppo(demo, "failover", "approve", plan_id, "--by", "sipho", "--note", "upgrade window agreed")
