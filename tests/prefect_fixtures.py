"""Prefect fixtures, a pytest plugin: ``pytest_plugins = ["tests.prefect_fixtures"]``.

``prefect_api``
    A real Prefect API for in-process flow runs: Prefect's ``prefect_test_harness``
    (temporary SQLite database, server subprocess), once per session and only if
    a test asks for it (~8 s to start). The runbooks' global concurrency limits
    are created on it, as ``ppo-dr serve`` does, because our flows take their
    slots with ``strict=True``. Yields the API URL.

``prefect_server``
    A real ``prefect server start`` on a free port of 127.0.0.1 with a temporary
    ``PREFECT_HOME``, for tests that need what the harness lacks: schedules,
    ``serve`` in another process. Its scheduler loops every 2 s instead of 60 s.
    Stopped (its whole process group) at the end of the session, whatever
    happened. Yields the API URL; point in-process code at it with
    :func:`using_api`, subprocesses with ``PREFECT_API_URL``.

Neither fixture changes ``os.environ``: the harness works through Prefect's
settings context, and ``prefect_api`` checks that no ``PREFECT_*`` variable
appeared (or restores it). Neither writes to ``~/.prefect``: both get a temporary
``PREFECT_HOME``. Build subprocess environments with :func:`isolated_env`, which
drops whatever ``PREFECT_*``/``PPO_DR_*`` the developer's shell has and gives a
temporary ``PREFECT_HOME``, so a test never talks to the operator's own server.

Tests using either fixture are marked ``prefect`` (``-m "not prefect"`` skips them).
Both wait up to :data:`STARTUP_TIMEOUT_S` for their server: a failed session fixture
fails every test that uses it, and on a loaded 2-core machine running two xdist workers
a cold server has been seen to need more than 90 s.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.local_server import LocalPrefectServer

_PREFIXES = ("PREFECT_", "PPO_DR_")
_FIXTURES = {"prefect_api", "prefect_server"}
STARTUP_TIMEOUT_S = 180


def isolated_env(**extra: str) -> dict[str, str]:
    """An environment for a subprocess that sees none of the developer's Prefect set-up.

    ``os.environ`` without any ``PREFECT_*`` or ``PPO_DR_*`` variable, with
    ``PREFECT_HOME`` in a temporary directory (so no profile in ``~/.prefect`` points
    it at another API, and it writes nothing there), plus *extra*.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PREFIXES)}
    env["PREFECT_HOME"] = str(_scratch_prefect_home())
    env.update(extra)
    return env


@functools.cache
def _scratch_prefect_home() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ppo-dr-test-prefect-home-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@contextlib.contextmanager
def using_api(api_url: str) -> Iterator[None]:
    """Point Prefect clients in this process at *api_url* for the block."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


def _prefect_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("PREFECT_")}


def _restore_prefect_env(saved: dict[str, str]) -> list[str]:
    """Put the ``PREFECT_*`` variables back as *saved*; return the names that differed."""
    changed = sorted(
        k for k in set(_prefect_env()) | set(saved) if os.environ.get(k) != saved.get(k)
    )
    for key in changed:
        if key in saved:
            os.environ[key] = saved[key]
        else:
            os.environ.pop(key, None)
    return changed


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prefect's test harness for the session, with the runbooks' concurrency limits."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    from deployments.registry import CONCURRENCY_LIMITS
    from deployments.serve import ensure_concurrency_limits

    saved = _prefect_env()
    started = time.monotonic()
    settings = {
        # Its heartbeat races the harness's fresh SQLite ("database is locked").
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
        # Results (a failed run pickles its exception), memo store, profiles: all in a
        # temporary home, never in the developer's ~/.prefect.
        PREFECT_HOME: tmp_path_factory.mktemp("prefect-home"),
    }
    with (
        temporary_settings(updates=settings),
        prefect_test_harness(server_startup_timeout=STARTUP_TIMEOUT_S),
    ):
        leaked = _restore_prefect_env(saved)
        assert not leaked, f"the Prefect test harness changed os.environ: {leaked}"
        ensure_concurrency_limits(CONCURRENCY_LIMITS)
        api_url = str(PREFECT_API_URL.value())
        print(f"\nprefect_api: harness at {api_url} ready in {time.monotonic() - started:.1f} s")
        try:
            yield api_url
        finally:
            _restore_prefect_env(saved)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``prefect server start`` for the session; always stopped afterwards."""
    home = tmp_path_factory.mktemp("prefect-server")
    env = isolated_env(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
    )
    server = LocalPrefectServer(home / "prefect", home / "prefect-server.log", port=0, base_env=env)
    started = time.monotonic()
    try:
        server.start()
        server.wait_until_healthy(timeout=STARTUP_TIMEOUT_S)
        print(f"\nprefect_server: {server.api_url} healthy in {time.monotonic() - started:.1f} s")
        yield server.api_url
    finally:
        server.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a Prefect API fixture as ``prefect``."""
    for item in items:
        if _FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.prefect)


__all__ = ["isolated_env", "prefect_api", "prefect_server", "using_api"]
