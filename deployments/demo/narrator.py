"""The demo's narrator: numbered steps, what a client answers, what the workload counts."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from ppo_dr.lab.supervisor import Lab

#: Steps shown before the outage story (1-9); the story's steps number on from here.
STEPS_BEFORE_OUTAGE = 9
_step_counter = [STEPS_BEFORE_OUTAGE]


def number_steps_from(first: int) -> None:
    """Let the next step be number *first* (a story that starts at 1)."""
    _step_counter[0] = first - 1


def next_step() -> int:
    """The number of the next step of the outage story."""
    _step_counter[0] += 1
    return _step_counter[0]


def say(step: str, text: str = "") -> None:
    """Narrate one step, so the output reads like the runbook it demonstrates."""
    print(f"\n== {step}", flush=True)
    if text:
        print(text, flush=True)


def get(url: str, timeout: float = 3.0) -> tuple[int | str, str]:
    """GET *url* on loopback; the status code (or the error) and the serving server."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - lab loopback URL
            return response.status, response.headers.get("X-PPO-Server", "?")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-PPO-Server", "-")
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"no answer ({reason})", "-"


def workload_counts(lab_dir: Path) -> dict[str, dict[str, int]]:
    """Per client: writes the app acknowledged and writes that failed (never acknowledged)."""
    status = lab_dir / "workload" / "status.json"
    if not status.exists():
        return {}
    clients = json.loads(status.read_text(encoding="utf-8")).get("clients", {})
    return {
        client: {"acked": int(row.get("acked", 0)), "failures": int(row.get("failures", 0))}
        for client, row in clients.items()
    }


def total(counts: dict[str, dict[str, int]], key: str, clients: list[str] | None = None) -> int:
    return sum(row[key] for client, row in counts.items() if clients is None or client in clients)


def print_status(lab: Lab) -> None:
    """The lab's status table: every process, where it listens, whether it answers."""
    print(f"{'name':16} {'dc':5} {'role':9} {'pid':>7} {'port':>6}  {'state':8} healthy")
    for row in lab.status():
        print(
            f"{row.name:16} {row.dc or '-':5} {row.role or row.kind:9} {row.pid or '-':>7} "
            f"{row.port or '-':>6}  {row.state:8} {'yes' if row.healthy else 'NO'}"
        )
