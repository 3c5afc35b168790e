"""The mirror's slot lease (``tasks.slots``): held while its holder lives, freed about a
minute after the holder is SIGKILLed. Real Prefect servers: the harness for holding
and refusing, a real ``prefect server start`` (the harness runs no repossessor) for
the lease running out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from tasks.slots import SLOT_LEASE_S, leased_slot
from tests.prefect_fixtures import isolated_env, using_api

ROOT = Path(__file__).resolve().parents[2]


def _new_limit() -> str:
    """A one-slot global concurrency limit of this test's own (xdist-safe name)."""
    name = f"test-slot-{uuid.uuid4().hex[:12]}"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    return name


def _taken(name: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def test_a_held_slot_refuses_a_second_holder_and_is_free_after(prefect_api: str) -> None:
    name = _new_limit()
    with leased_slot(name, timeout_s=10):
        assert _taken(name) == 1
        started = time.monotonic()
        with pytest.raises(TimeoutError), leased_slot(name, timeout_s=2):
            pytest.fail("a second holder got the one slot")
        assert time.monotonic() - started < 30
    assert _taken(name) == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_live_holder_keeps_its_slot_and_a_killed_ones_frees_in_a_minute(
    prefect_server: str,
) -> None:
    """Both past one lease: the live holder's renewals keep its slot, the killed one's
    slot is repossessed one lease after its last renewal (not Prefect's 300 s)."""
    with using_api(prefect_server):
        live, killed = _new_limit(), _new_limit()
        code = (
            "import sys, time\nfrom tasks.slots import leased_slot\n"
            "with leased_slot(sys.argv[1], timeout_s=60):\n"
            "    print('held', flush=True)\n    time.sleep(600)\n"
        )
        holder = subprocess.Popen(
            [sys.executable, "-c", code, killed],
            cwd=ROOT,
            env=isolated_env(PREFECT_API_URL=prefect_server, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            with leased_slot(live, timeout_s=60):
                os.killpg(holder.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                assert _taken(killed) == 1
                while _taken(killed) and time.monotonic() - killed_at < 180:
                    time.sleep(1)
                freed_after = time.monotonic() - killed_at
                time.sleep(max(0.0, SLOT_LEASE_S * 1.5 - freed_after))
                assert _taken(live) == 1, "the live holder lost its slot"
            assert _taken(live) == 0
        finally:
            if holder.poll() is None:
                os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
    print(f"\nkilled holder's slot freed after {freed_after:.1f} s")
    # one lease after the last renewal, plus the repossessor's loop and a loaded box
    assert freed_after < SLOT_LEASE_S + 45
