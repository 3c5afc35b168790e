"""The probe's pool check against a real Prefect API (the harness): a DC pool whose only
worker stopped beating gets a non-paging incident naming it; a served pool none; the
incident recovers when the worker beats again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate

from ppo_dr.probe.pools import UNATTENDED_KIND
from ppo_dr.store import Store
from tasks.probe import check_work_pools


async def _beat(pool: str, worker: str) -> None:
    async with get_client() as client:
        await client.send_worker_heartbeat(pool, worker, heartbeat_interval_seconds=600)


def test_a_pool_nobody_serves_raises_a_non_paging_incident_naming_it(
    prefect_api: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Store(url) as store:
        store.upgrade()
    pools = ("dc-pools-a", "dc-pools-b")
    with get_client(sync_client=True) as client:
        for name in pools:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"), overwrite=True)
    try:
        _check_and_recover(url)
    finally:  # other probe runs on this API must not find them
        with get_client(sync_client=True) as client:
            for name in pools:
                client.delete_work_pool(name)


def _check_and_recover(url: str) -> None:
    asyncio.run(_beat("dc-pools-b", "dc-pools-b@test"))  # online for 10 minutes

    # Threshold 0: dc-pools-a has had no worker since it was made.
    opened, recovered = asyncio.run(check_work_pools(url, 0.0, None))
    with Store(url) as store:
        incidents = {i.scope["subject"]: i for i in store.incidents(kind=UNATTENDED_KIND)}
    assert "dc-pools-b" not in incidents and recovered == []
    mine = incidents["dc-pools-a"]
    assert mine.id in opened and not mine.paging
    assert "nobody is running data centre pools-a's mirrors" in mine.title

    asyncio.run(_beat("dc-pools-a", "dc-pools-a@test"))
    opened, recovered = asyncio.run(check_work_pools(url, 0.0, None))
    assert mine.id in recovered and mine.id not in opened
    with Store(url) as store:
        assert store.incident(mine.id).state == "recovered"  # type: ignore[union-attr]
