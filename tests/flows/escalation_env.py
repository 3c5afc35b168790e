"""What the escalation tests share: escalation flow runs in threads of this process
(with this context, so they see the Prefect API of the test), the outbox they write,
the store they read, and a teardown that ends every run the test started."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from flows.escalation import escalation
from ppo_dr.channels import read_outbox
from ppo_dr.store import Store


@dataclass
class EscalationEnv:
    """A fleet file, its outbox and store, and the escalation runs a test started."""

    fleet_file: Path
    outbox: Path
    store: Store
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def start(self, **params: Any) -> threading.Thread:
        """Run the escalation flow in a thread that sees this context (the API)."""
        context = contextvars.copy_context()

        def run() -> None:
            try:
                context.run(escalation, fleet_file=self.fleet_file, **params)
            except BaseException as exc:  # reported by the teardown
                self.errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def outbox_lines(self) -> list[dict[str, Any]]:
        return read_outbox(self.outbox) if self.outbox.exists() else []

    def notice_keys(self) -> list[str]:
        """The idempotency keys of every message in the outbox, oldest first."""
        return [line["key"] for line in self.outbox_lines()]

    def kinds(self, incident_id: int) -> list[str]:
        return [e.kind for e in self.store.timeline(incident_id)]


E = TypeVar("E", bound=EscalationEnv)


def two_line_policy(
    *, second_deadline: int, public_after: int, public_every: int, clients_after: int
) -> dict[str, Any]:
    """The example fleet's escalation as the tests write it: sipho and anna (15 s), then
    james, one repeat, and the timings (seconds) that the test's story needs."""
    return {
        "levels": [
            {"name": "first line", "notify": ["sipho", "anna"], "ack_deadline": 15},
            {"name": "second line", "notify": ["james"], "ack_deadline": second_deadline},
        ],
        "repeat": 1,
        "ack_timeout": 300,
        "public_after": public_after,
        "public_every": public_every,
        "clients_after": clients_after,
    }


def escalation_env(fleet_file: Path, outbox: Path, url: str, kind: type[E]) -> Iterator[E]:
    """A *kind* of :class:`EscalationEnv` on a migrated store at *url*; at the end every
    incident left open is resolved so its runs end, and every run must have ended cleanly."""
    with Store(url) as store:
        store.upgrade()
        env = kind(fleet_file, outbox, store)
        try:
            yield env
        finally:
            for left in store.incidents(("open", "acknowledged", "recovered")):
                store.resolve(left.id, "test teardown")
            for thread in env.threads:
                thread.join(timeout=60)
        assert not any(t.is_alive() for t in env.threads), "an escalation run did not end"
        assert not env.errors, env.errors


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def example_fleet(
    tmp_path: Path, monkeypatch: Any, escalation_policy: dict[str, Any] | None = None
) -> tuple[Path, Path, str]:
    """``examples/fleet.yaml`` (never contacted) with an outbox, a SQLite store and a
    state directory in *tmp_path* (and *escalation_policy* if given): the fleet file,
    the outbox and the store's URL. *monkeypatch* points the environment at them."""
    import yaml

    import flows.escalation as escalation_module

    root = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((root / "examples" / "fleet.yaml").read_text(encoding="utf-8"))
    outbox = tmp_path / "outbox.jsonl"
    doc["channels"] = {"outbox": str(outbox)}
    if escalation_policy is not None:
        doc["escalation"] = escalation_policy
    doc.pop("store", None)
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("PPO_DR_DB_URL", url)
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(escalation_module, "RECHECK_S", 3)
    return fleet_file, outbox, url
