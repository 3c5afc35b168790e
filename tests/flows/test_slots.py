"""The mirror's slot lease (``tasks.slots``): held while its holder lives, freed about a
minute after the holder is SIGKILLed, and given back at once by the next asker when the
holder recorded it in the store and its run ended (or was an earlier attempt of the
asker's own run). Real Prefect servers: the harness for holding, refusing and giving
back (it runs no repossessor: a lease there never runs out, so only a give-back frees
a killed holder's slot), a real ``prefect server start`` for the lease running out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.states import Crashed, Running

from deployments.local_server import LocalPrefectServer
from ppo_dr.slot_holders import Holder, RecordedLease
from ppo_dr.store import Store
from tasks.slots import ORPHAN_SEEN_S, RECLAIM_EVERY_S, SLOT_LEASE_S, free_slots, leased_slot
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


@flow(name="slot-holder-check")
def _holder_flow() -> None:
    """Only a name for the flow runs these tests create by hand."""


def _running_run() -> str:
    """A flow run in state Running, as the runner leaves it when it starts a process."""
    with get_client(sync_client=True) as client:
        return str(client.create_flow_run(_holder_flow, state=Running()).id)


def _store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Store(url) as store:
        store.upgrade()
    return url


def _holder(name: str, run_id: str, url: str, api: str) -> subprocess.Popen[str]:
    """A process of flow run *run_id* holding a slot of *name*, recorded in store *url*."""
    code = (
        "import sys, time\nfrom tasks.slots import leased_slot\n"
        "with leased_slot(sys.argv[1], timeout_s=60, store_url=sys.argv[2]):\n"
        "    print('held', flush=True)\n    time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, name, url],
        cwd=ROOT,
        env=isolated_env(PREFECT_API_URL=api, PYTHONPATH=str(ROOT), PREFECT__FLOW_RUN_ID=run_id),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def _kill(holder: subprocess.Popen[str]) -> None:
    if holder.poll() is None:
        os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()


@pytest.mark.timeout(180)
def test_a_killed_holders_slot_is_given_back_once_its_run_ended(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, url = _new_limit(), _store(tmp_path)
    killed_run = _running_run()
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", _running_run())  # the asker's own run
    holder = _holder(name, killed_run, url, prefect_api)
    try:
        with Store(url) as store:
            assert [lease.holder.run_id for lease in store.slot_leases(name)] == [killed_run]
        with pytest.raises(TimeoutError), leased_slot(name, timeout_s=3, store_url=url):
            pytest.fail("a live holder's slot was taken")  # its run is Running: alive
        _kill(holder)
        with pytest.raises(TimeoutError), leased_slot(name, timeout_s=3, store_url=url):
            pytest.fail("the slot was taken before the killed run was called ended")

        def crash() -> None:  # what the runner does on the death, while the asker waits
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(uuid.UUID(killed_run), Crashed(), force=True)

        timer = threading.Timer(3.0, crash)
        timer.start()  # the asker is already waiting: only its look every 10 s frees it
        with leased_slot(name, timeout_s=40, store_url=url), Store(url) as store:
            timer.join()
            assert _taken(name) == 1  # the dead holder's given back, this one's taken
            holders = [lease.holder.run_id for lease in store.slot_leases(name)]
            assert holders == [os.environ["PREFECT__FLOW_RUN_ID"]]
        with Store(url) as store:
            assert _taken(name) == 0 and store.slot_leases(name) == []
    finally:
        _kill(holder)


@pytest.mark.timeout(180)
def test_a_rerun_of_the_same_run_takes_back_its_killed_attempts_slot(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failover rerun keeps its run id and is Running again: the killed attempt's
    lease is its own, from another process."""
    name, url = _new_limit(), _store(tmp_path)
    run_id = _running_run()
    holder = _holder(name, run_id, url, prefect_api)
    _kill(holder)
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", run_id)
    with leased_slot(name, timeout_s=30, store_url=url):
        assert _taken(name) == 1
    assert _taken(name) == 0


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


def _orphan(name: str) -> None:
    """A slot taken with no lease behind it: what a Prefect server that keeps leases in
    memory leaves after a restart (the count is in its database, the lease was not)."""
    with get_client(sync_client=True) as client:
        client.increment_concurrency_slots([name], 1, mode="concurrency")
    assert _taken(name) == 1


@pytest.mark.timeout(300)
def test_an_orphaned_slot_is_given_back_to_a_waiting_asker(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in the chaos matrix: after a restart of the Prefect server the failover slot
    stayed taken and the next failover waited for ever."""
    name, url = _new_limit(), _store(tmp_path)
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", _running_run())
    _orphan(name)
    started = time.monotonic()
    with leased_slot(name, timeout_s=ORPHAN_SEEN_S + 60, store_url=url), Store(url) as store:
        waited = time.monotonic() - started
        assert ORPHAN_SEEN_S <= waited < ORPHAN_SEEN_S + 3 * RECLAIM_EVERY_S
        assert _taken(name) == 1  # the orphan given back, this holder's taken
        assert [x.holder.run_id for x in store.slot_leases(name)] == [
            os.environ["PREFECT__FLOW_RUN_ID"]
        ]
    assert _taken(name) == 0


@pytest.mark.timeout(300)
def test_a_slot_with_a_recorded_holder_is_no_orphan_and_costs_no_wait(
    prefect_api: str, tmp_path: Path
) -> None:
    """The mirror's skip: a slot its live holder recorded is left at once; the same
    slot once its holder is gone but its lease was lost is given back (free_slots)."""
    name, url = _new_limit(), _store(tmp_path)
    live = RecordedLease(str(uuid.uuid4()), name, Holder(_running_run(), "token"))
    with Store(url) as store:
        store.record_slot_lease(live)  # a holder whose lease the restart lost
    _orphan(name)
    started = time.monotonic()
    assert free_slots(name, url) is False
    assert time.monotonic() - started < RECLAIM_EVERY_S and _taken(name) == 1
    with Store(url) as store:  # it finished: its release found no lease, its record went
        store.forget_slot_lease(live.lease_id)
    assert free_slots(name, url) is True
    assert _taken(name) == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_holder_whose_lease_a_restart_forgot_gives_its_slot_back_by_count(
    tmp_path: Path,
) -> None:
    """Seen in the chaos matrix: a failover held the slot across a Prefect restart, its
    release found no lease and gave nothing back, and the next failover (the `dc`
    fault's) waited 75 s for the orphan. Its own server, restarted mid-hold: a server
    on SQLite with no Redis keeps leases in memory and forgets them."""
    env = isolated_env(PREFECT_SERVER_ANALYTICS_ENABLED="false")
    server = LocalPrefectServer(tmp_path / "home", tmp_path / "server.log", port=0, base_env=env)
    server.start()
    try:
        server.wait_until_healthy(timeout=120)
        with using_api(server.api_url):
            name = _new_limit()
            with leased_slot(name, timeout_s=30):
                assert _taken(name) == 1
                port = server.port
                server.stop()
                server = LocalPrefectServer(
                    tmp_path / "home", tmp_path / "server.log", port=port, base_env=env
                )
                server.start()
                server.wait_until_healthy(timeout=120)
                assert _taken(name) == 1  # counted in the database, its lease forgotten
            assert _taken(name) == 0  # given back by count, no orphan left behind
    finally:
        server.stop()
