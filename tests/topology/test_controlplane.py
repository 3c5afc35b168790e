"""The HA control plane with real processes: PostgreSQL, Redis, two Prefect API
servers, the services and HAProxy (the session's stack, from conftest)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppo_dr.errors import LabError
from ppo_dr.lab import controlplane, controlplane_postgres
from tests.topology.conftest import needs_binaries, reachable_tempdir

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(900), needs_binaries]

ROOT = Path(__file__).resolve().parents[2]


def _post(url: str, body: dict[str, object], timeout: float = 10.0) -> tuple[int, object]:
    request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 only)
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    directory = reachable_tempdir()
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run_flow(api_url: str, name: str) -> str:
    """Run a one-task flow against *api_url* in a fresh interpreter; its flow run id."""
    code = (
        "from prefect import flow, task\n"
        "from prefect.context import get_run_context\n"
        "@task\n"
        "def double(x: int) -> int:\n"
        "    return 2 * x\n"
        f"@flow(name={name!r})\n"
        "def f() -> str:\n"
        "    assert double(21) == 42\n"
        "    return str(get_run_context().flow_run.id)\n"
        "print(f())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=api_url, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_stack_is_up_behind_one_address(plane: controlplane.ControlPlane) -> None:
    assert plane.state == "up"
    assert [c.name for c in plane.components] == [
        "postgres",
        "redis",
        "api-1",
        "api-2",
        "services",
        "haproxy",
    ]
    assert controlplane.api_healthy(plane.api_url)
    for port in plane.api_ports:
        assert controlplane.api_healthy(f"http://127.0.0.1:{port}/api")
    pg = controlplane_postgres.postgres_bin()
    out = subprocess.run([pg / "postgres", "--version"], capture_output=True, text=True).stdout
    assert "PostgreSQL" in out
    # The store's own database is reachable with the recorded credentials.
    psql = subprocess.run(
        [pg / "psql", plane.database_url("store", driver="postgresql"), "-tAc", "select 1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert psql.stdout.strip() == "1", psql.stderr


def test_flow_run_through_haproxy(plane: controlplane.ControlPlane) -> None:
    run_id = _run_flow(plane.api_url, "through-haproxy")
    with urllib.request.urlopen(f"{plane.api_url}/flow_runs/{run_id}", timeout=10) as r:  # noqa: S310
        run = json.loads(r.read())
    assert run["state_type"] == "COMPLETED"


def test_one_api_server_killed_loses_nothing(plane: controlplane.ControlPlane) -> None:
    """Writes keep flowing through HAProxy while api-1 is SIGKILLed; every write that
    was answered is in the database afterwards, and the API answers through api-2."""
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    acked: list[str] = []
    failed: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            name = f"{prefix}-{i}"
            try:
                status, _ = _post(f"{plane.api_url}/flows/", {"name": name})
            except OSError as exc:
                failed.append(f"{name}: {exc}")
            else:
                (acked if status in (200, 201) else failed).append(name)
            i += 1
            time.sleep(0.02)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(2)
        controlplane.kill(Path(plane.directory), "api-1", signal.SIGKILL)
        time.sleep(5)
    finally:
        stop.set()
        thread.join(30)
    before_kill = len(acked)
    assert before_kill > 20
    print(f"\nAPI failover: {len(acked)} writes answered, {len(failed)} failed: {failed[:3]}")
    # A write in flight on api-1 when it dies can fail (HAProxy does not replay a POST
    # the dead server had already read); seen once in about ten runs, under heavy load.
    # The client is told, so nothing it was told is lost: every answered write is stored.
    assert len(failed) <= 2, failed
    stored: set[str] = set()
    while True:  # the API answers at most 200 a page; a quick machine writes more
        status, page = _post(
            f"{plane.api_url}/flows/filter",
            {"flows": {"name": {"like_": prefix}}, "limit": 200, "offset": len(stored)},
        )
        assert status == 200 and isinstance(page, list)
        stored |= {f["name"] for f in page}
        if len(page) < 200:
            break
    assert set(acked) <= stored
    assert not controlplane.api_healthy(f"http://127.0.0.1:{plane.api_ports[0]}/api")
    run_id = _run_flow(plane.api_url, "after-api-1-died")
    assert run_id


def _stat(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text()[:80]
    except OSError:
        return "gone"


def test_down_leaves_no_process(reachable_dir: Path) -> None:
    """A second, short-lived stack: down stops every process it made, by marker."""
    tmp_path = reachable_dir
    plane = controlplane.up(tmp_path, echo=lambda _: None)
    pids = [c.pid for c in plane.components]
    with pytest.raises(LabError, match="run down first"):
        controlplane.up(tmp_path, echo=lambda _: None)
    stopped = controlplane.down(tmp_path, echo=lambda _: None)
    assert stopped == ["haproxy", "services", "api-2", "api-1", "redis", "postgres"]
    assert controlplane.marked_pids(tmp_path) == []
    # A zombie is gone for good (in a container whose pid 1 does not reap, postgres's
    # parent, it stays a zombie); anything else left running is a leak.
    left = {p: _stat(p) for p in pids if Path(f"/proc/{p}").exists()}
    assert {p: st for p, st in left.items() if ") Z " not in st} == {}
    assert not any(c.is_running() for c in controlplane.load(tmp_path).components)
    assert controlplane.load(tmp_path).state == "stopped"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_private_directory_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="postgres user cannot reach"):
        controlplane.up(tmp_path, echo=lambda _: None)
    assert controlplane.marked_pids(tmp_path) == []


def test_unknown_component_is_named(plane: controlplane.ControlPlane) -> None:
    with pytest.raises(LabError, match="known: postgres, redis, api-1"):
        controlplane.kill(Path(plane.directory), "api-9")
