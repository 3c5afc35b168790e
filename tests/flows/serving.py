"""One deployment served by a subprocess against a real Prefect server, as ``ppo-dr
serve`` serves it, for the end-to-end tests that need a runner of their own (the test
harness runs no runner). Serving a single deployment keeps other runbooks (mirrors,
probes) from loading the machine while the test waits on the one it watches."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from deployments.local_server import api_is_healthy

#: Applies the deployment (so ``run_deployment`` can find it) and serves it.
SERVE = (
    "import sys\n"
    "from prefect import serve\n"
    "from deployments import registry\n"
    "deployment = getattr(registry, sys.argv[1])()\n"
    "deployment.apply()\n"
    "serve(deployment, print_starting_message=False)\n"
)


@contextlib.contextmanager
def served(builder: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``deployments.registry.<builder>()`` served by a subprocess with *env* (which names
    the server in ``PREFECT_API_URL``), its output in *log*; stopped at the end, killed if
    SIGTERM does not end it within 30 s."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, builder],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            assert api_is_healthy(env["PREFECT_API_URL"])
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
