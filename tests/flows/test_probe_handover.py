"""Two probe flow runs overlapping, as at each period's hand-over when the next run
starts late: the session lab (fast timings: a check every 2 s) and Prefect's test
harness, both runs in one event loop. The successor takes over mid-period; the old run
stops at its next cycle; between the old run's last recorded check and the new run's
first there is no gap the state machine would count as a break, and every check is
recorded once."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import pytest

from flows.probe import probe_fleet
from ppo_dr.inventory import Fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.probe.graph import server_target
from ppo_dr.probe.lease import LEASE_NAME
from ppo_dr.probe.minutes import HEARTBEAT_TARGET
from ppo_dr.probe.state import OutagePolicy
from ppo_dr.store import Store

pytestmark = [pytest.mark.timeout(240), pytest.mark.lab, pytest.mark.prefect]

#: How long each run would probe if nobody took over (the old one must stop far sooner).
OLD_RUN_FOR_S = 90.0
NEW_RUN_FOR_S = 8.0


async def _overlapping(lab: Lab, store: Store) -> tuple[dict[str, Any], dict[str, Any]]:
    old = asyncio.create_task(probe_fleet(run_for_s=OLD_RUN_FOR_S, fleet_file=lab.fleet_file))
    deadline = time.monotonic() + 120
    # Start the successor once the old run is into its cycles (it renewed at least twice).
    while time.monotonic() < deadline and not old.done():
        lease = store.probe_lease(LEASE_NAME)
        if lease is not None and (lease.renewed_at - lease.taken_at).total_seconds() >= 2:
            break
        await asyncio.sleep(0.5)
    assert not old.done(), old.result()
    new = await probe_fleet(run_for_s=NEW_RUN_FOR_S, fleet_file=lab.fleet_file)
    return await asyncio.wait_for(old, timeout=60), new


def test_a_successor_takes_over_with_no_gap_and_every_check_recorded_once(
    lab: Lab, fleet: Fleet, store: Store, prefect_api: str
) -> None:
    started = time.monotonic()
    old, new = asyncio.run(_overlapping(lab, store))
    took = time.monotonic() - started
    assert old["cycles"] >= 2 and new["cycles"] >= 2, (old, new)
    assert old["handed_over_to"] is not None and new["handed_over_to"] is None
    assert took < OLD_RUN_FOR_S  # the old run stopped at the hand-over, not at its limit
    old_last = datetime.fromisoformat(old["last_cycle_at"])
    new_first = datetime.fromisoformat(new["first_cycle_at"])
    gap = (new_first - old_last).total_seconds()
    max_gap = OutagePolicy.from_timing(fleet.timing).max_gap
    assert max_gap is not None
    print(f"\nhand-over gap between recorded checks: {gap:.2f} s (max gap {max_gap})")
    assert 0 < gap <= max_gap.total_seconds()  # one recorder at a time, no break
    lease = store.probe_lease(LEASE_NAME)
    assert lease is not None
    assert lease.holder == old["handed_over_to"] and lease.released  # new run hit its limit
    assert lease.previous is not None and lease.previous_released
    cycles = old["cycles"] + new["cycles"]
    for target in (
        HEARTBEAT_TARGET,
        server_target(next(s.id for s in fleet.servers if s.role == "app")),
    ):
        recorded = sum(m.checks for m in store.probe_minutes(target))
        assert recorded == cycles, (target, recorded, old, new)
