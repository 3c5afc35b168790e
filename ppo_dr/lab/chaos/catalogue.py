"""The chaos suite's faults by name: what each injects, what must hold, which are built.

Pure data and the parsing of ``--faults``: no I/O. The names and the must-hold text are
issue 10's table. A fault is *implemented* when :mod:`ppo_dr.lab.chaos.runner` can
inject and heal it and :mod:`ppo_dr.lab.chaos.verdict` can judge it; the others are
listed so that asking for one is refused by name, not silently skipped. Both labs (the
loopback one and the distributed one) implement the
:class:`~ppo_dr.lab.chaos.fleets.ChaosFleet` protocol: the catalogue and the verdict are
the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from ppo_dr.errors import PermanentError

#: How a fault is judged: a whole server or data centre lost (an incident and a
#: failover expected), a blip that must page nobody, damaged data at rest on one
#: mirror (:mod:`ppo_dr.lab.chaos.integrity`), the orchestrator killed mid-run
#: (:mod:`ppo_dr.lab.chaos.orchestrator`), or trouble around a server that the mirror
#: runbook must ride out (:mod:`ppo_dr.lab.chaos.mirror_faults`).
Shape = Literal[
    "server-outage",
    "dc-outage",
    "flapping",
    "integrity",
    "orchestrator-kill",
    "mirror",
    "channel-errors",  # paging through failing providers (:mod:`.channel_errors`)
]


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault of the matrix: its name, what is done, what must hold."""

    name: str
    injected: str
    must_hold: str
    shape: Shape | None = None  # None: not implemented yet
    lab_fault: str | None = None  # the lab's own fault (``ppo-dr lab break --fault``)

    @property
    def implemented(self) -> bool:
        return self.shape is not None

    @property
    def expects_failover(self) -> bool:
        return self.shape in ("server-outage", "dc-outage")


_OUTAGE: Final = "one incident, failover, writes lost <= those after the restored snapshot"
_DAMAGED: Final = (
    "verify names client, file and mirror; restore takes the other mirror; a drill "
    "of that client fails loudly"
)

#: Every fault of the issue, in priority order (the CI tier first).
CATALOGUE: Final[tuple[FaultSpec, ...]] = (
    FaultSpec("power", "app server kill -9", _OUTAGE, "server-outage", "power"),
    FaultSpec(
        "hang",
        "app server SIGSTOP",
        _OUTAGE + "; no second incident when it thaws",
        "server-outage",
        "hang",
    ),
    FaultSpec(
        "bitflip",
        "one byte flipped in a pack on one mirror",
        _DAMAGED,
        "integrity",
    ),
    FaultSpec(
        "channel-errors",
        "SMS/e-mail/X stand-ins answer 500, 429, then time out",
        "retried with back-off, fallback channel used, every attempt recorded, no duplicate page",
        "channel-errors",
    ),
    FaultSpec(
        "flapping",
        "a target down 5 s / up 5 s for 2 minutes",
        "no page, no incident (each down spell is shorter than the outage threshold)",
        "flapping",
        "network",
    ),
    FaultSpec(
        "orchestrator-kill",
        "the processes running a mirror, then those running a failover, SIGKILLed",
        "rerun completes; every client snapshotted after the kill; no client restored "
        "twice; repositories pass verify --read-data",
        "orchestrator-kill",
    ),
    FaultSpec(
        "disk",
        "app server's data unreadable (data root gone)",
        _OUTAGE + "; the mirrors never take the broken data as a new snapshot",
        "server-outage",
        "disk",
    ),
    FaultSpec(
        "network",
        "app server unreachable (the lab's network simulator black-holes it)",
        _OUTAGE,
        "server-outage",
        "network",
    ),
    FaultSpec(
        "mirror-dies",
        "a mirror server killed mid-mirror",
        "the other mirror's snapshot complete; earlier snapshots intact; next run catches "
        "up; stale alert if it stays down past the RPO",
        "mirror",
        "power",
    ),
    FaultSpec("truncate-pack", "a pack on one mirror cut short", _DAMAGED, "integrity"),
    FaultSpec(
        "latency",
        "300 ms and 2 % loss to the off-site mirror",
        "the mirror is slower, not failed; RPO reported",
        "mirror",
        "latency",
    ),
    FaultSpec(
        "host-key-change",
        "a mirror's host key replaced",
        "connection refused, a non-paging incident naming the server and both "
        "fingerprints; no data sent",
        "mirror",
        "host-key",
    ),
    FaultSpec(
        "mirror-disk-full",
        "a mirror's disk fills mid-run",
        "the run fails cleanly, earlier snapshots intact, the other mirror unaffected, "
        "stale alert, no partial snapshot listed",
        "mirror",
        "disk-full",
    ),
    FaultSpec(
        "clock-skew",
        "an app server's clock 2 h ahead",
        "snapshot ids, RPO and outage times still right (orchestrator time)",
        "mirror",
        "clock-skew",
    ),
    FaultSpec(
        "store-restart",
        "app server kill -9, then the store's database away 30 s mid-failover",
        _OUTAGE + "; retried; no incident or notice lost or duplicated",
        "server-outage",
        "power",
    ),
    FaultSpec(
        "prefect-server-kill",
        "app server kill -9, then the Prefect API killed and restarted mid-failover",
        _OUTAGE + "; the run completes or is resumed; nothing done twice",
        "server-outage",
        "power",
    ),
    FaultSpec(
        "dc",
        "every server of one DC (kill -9)",
        "one DC incident; restore from off-site mirrors into allowed DCs only",
        "dc-outage",
        "power",
    ),
)

BY_NAME: Final = {spec.name: spec for spec in CATALOGUE}
#: The tier CI runs on every submission (issue 10), in this order.
CI_TIER: Final = ("power", "hang", "bitflip", "channel-errors", "flapping", "orchestrator-kill")


def implemented() -> list[str]:
    """Names of the faults this build can inject and judge, in catalogue order."""
    return [spec.name for spec in CATALOGUE if spec.implemented]


def select_faults(text: str) -> list[FaultSpec]:
    """The faults named by ``--faults`` (comma-separated names, or ``all``), in order.

    ``all`` means every implemented fault. An unknown name, a name not implemented yet,
    a repeated or an empty name is refused with the list of implemented ones: a chaos
    run never quietly does less than it was asked.
    """
    names = [part.strip() for part in text.split(",")]
    built = ", ".join(implemented())
    if names == ["all"]:
        return [spec for spec in CATALOGUE if spec.implemented]
    if any(not name for name in names):
        raise PermanentError(f"--faults {text!r}: an empty name; implemented: {built}")
    seen: set[str] = set()
    chosen = []
    for name in names:
        spec = BY_NAME.get(name)
        if spec is None:
            raise PermanentError(
                f"unknown fault {name!r}: known are {', '.join(BY_NAME)}; implemented: {built}"
            )
        if not spec.implemented:
            raise PermanentError(
                f"fault {name!r} is not implemented yet (it would inject: {spec.injected}); "
                f"implemented: {built}"
            )
        if name in seen:
            raise PermanentError(f"--faults {text!r} names {name!r} twice")
        seen.add(name)
        chosen.append(spec)
    return chosen
