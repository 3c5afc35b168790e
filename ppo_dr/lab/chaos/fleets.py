"""The fleet a chaos run breaks: the protocol a lab implements, and the loopback lab's.

:class:`ChaosFleet` is all the runner needs from a lab: where its records are (fleet
file and the store it names, workload log, outbox) and the lab's own fault commands. The
loopback lab (:class:`LoopbackFleet`, over :class:`ppo_dr.lab.supervisor.Lab`) is the
one implemented; the distributed lab plugs in by implementing the same five members
(its ``break_``/``heal`` reaching its hosts, e.g. a namespace's link for ``network``),
and the catalogue, the runner and the verdict stay as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from ppo_dr.inventory import load_fleet
from ppo_dr.lab.supervisor import Lab


class ChaosFleet(Protocol):
    """A running lab, as the chaos runner sees it."""

    @property
    def fleet_file(self) -> Path: ...

    @property
    def acks_file(self) -> Path:
        """The workload's log of acknowledged writes (JSON lines)."""
        ...

    def outbox(self) -> Path:
        """The file the lab's channels write every message to (JSON lines)."""
        ...

    def break_(self, target: str, fault: str) -> list[str]:
        """Inject the lab's *fault* (power, hang, disk, network) into *target*."""
        ...

    def heal(self, target: str) -> list[str]:
        """Undo every fault on *target*; wait until it answers again."""
        ...

    def unhealthy(self) -> list[str]:
        """Components that do not answer through the network now ([] when healthy)."""
        ...


class LoopbackFleet:
    """The embedded lab on 127.0.0.1 (``ppo-dr lab up``) as a :class:`ChaosFleet`."""

    def __init__(self, directory: Path) -> None:
        self.lab = Lab(directory)
        self.lab._require_running()  # a clear error for a lab that is not up

    @property
    def fleet_file(self) -> Path:
        return self.lab.fleet_file

    @property
    def acks_file(self) -> Path:
        return self.lab.directory / "workload" / "acks.jsonl"

    def outbox(self) -> Path:
        fleet = load_fleet(self.fleet_file)
        return Path(fleet.channels.outbox or self.lab.directory / "outbox.jsonl")

    def break_(self, target: str, fault: str) -> list[str]:
        return self.lab.break_(target, fault)

    def heal(self, target: str) -> list[str]:
        return self.lab.heal(target, timeout=60.0)

    def unhealthy(self) -> list[str]:
        return [row.name for row in self.lab.status() if not row.healthy]

    def faults_in_force(self) -> dict[str, list[str]]:
        """Server -> faults recorded in lab.json (a chaos run starts with none)."""
        state = json.loads(self.lab.state_file.read_text(encoding="utf-8"))
        return {s: sorted(f) for s, f in (state.get("faults") or {}).items() if f}
