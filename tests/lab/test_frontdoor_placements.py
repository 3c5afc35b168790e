"""The front door's placement table: served while it refreshes, refused once too old.

A placement source stands in for the store (the front door's ``PlacementSource``
protocol): the test decides what it answers and when it fails.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from ppo_dr.errors import TransientError
from ppo_dr.lab.frontdoor import PlacementCache


@dataclass(frozen=True)
class _Row:
    client_id: str
    server_id: str


class _Source:
    def __init__(self) -> None:
        self.routes = {"acme": "app-1"}
        self.reads = 0
        self.down = False

    def placements(self) -> list[_Row]:
        self.reads += 1
        if self.down:
            raise TransientError("store unreachable")
        return [_Row(c, s) for c, s in self.routes.items()]


async def _settle(cache: PlacementCache, want: dict[str, str]) -> None:
    for _ in range(100):
        if await cache.routes() == want:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never routed as {want}")


def test_a_stale_table_is_served_while_one_refresh_runs() -> None:
    async def scenario() -> None:
        source = _Source()
        cache = PlacementCache(source, max_age=0.05, stale_limit=5.0)
        assert await cache.routes() == {"acme": "app-1"}
        assert await cache.routes() == {"acme": "app-1"}
        assert source.reads == 1  # fresh: no second query
        source.routes = {"acme": "app-2"}
        await asyncio.sleep(0.06)
        answers = await asyncio.gather(*(cache.routes() for _ in range(50)))
        assert all(a == {"acme": "app-1"} for a in answers)  # nobody waited for the store
        await _settle(cache, {"acme": "app-2"})
        assert source.reads == 2  # fifty stale requests, one refresh

    asyncio.run(scenario())


def test_a_failing_store_keeps_the_last_table_until_the_stale_limit() -> None:
    async def scenario() -> None:
        source = _Source()
        cache = PlacementCache(source, max_age=0.02, stale_limit=0.3)
        await cache.routes()
        source.down = True
        await asyncio.sleep(0.05)
        assert await cache.routes() == {"acme": "app-1"}
        await asyncio.sleep(0.3)
        with pytest.raises(TransientError):
            await cache.routes()
        source.down = False
        source.routes = {"acme": "app-3"}
        assert await cache.routes() == {"acme": "app-3"}

    asyncio.run(scenario())
