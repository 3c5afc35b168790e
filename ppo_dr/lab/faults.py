"""Fault injection: break a server or a whole data centre, and heal it again.

Faults are recorded in ``lab.json``, so ``status`` shows them and ``heal`` knows what
to undo:

    power     SIGKILL of the server process     heal: start it again, same ports and disk
    hang      SIGSTOP                           heal: SIGCONT
    disk      data root moved to quarantine/    heal: moved back
    network   server listed in net/cut.json     heal: removed (netsim re-reads on SIGHUP)

and the faults of a server's surroundings (``host-key``, ``disk-full``, ``latency``,
``clock-skew``), described in :mod:`ppo_dr.lab.mirror_faults`.

In a namespaced lab a whole data centre fails for real: ``power`` SIGKILLs every
process in its namespace (servers, its workers and their flow runs), and ``network``
takes its link to the bridge down (``ip link set down``); heal restarts the servers
and workers, and takes the link up.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ppo_dr.errors import LabError
from ppo_dr.lab import mirror_faults, netns, pid_identity
from ppo_dr.lab.labdir import FAULTS, now_text
from ppo_dr.lab.processes import send_signal, wait_gone
from ppo_dr.lab.status import LabStatus, probe_ssh

# Heal undoes faults in this order: the disk is back before the process restarts.
_HEAL_ORDER = (*mirror_faults.SURROUNDING_FAULTS, "disk", "network", "hang", "power")


class LabFaults(LabStatus):
    """Breaking and healing the servers of a running lab."""

    def _servers_of(self, state: Mapping[str, Any], target: str) -> list[str]:
        comps = state["components"]
        servers = {name: c for name, c in comps.items() if c["kind"] == "server"}
        if target in servers:
            return [target]
        dcs = sorted({c["dc"] for c in servers.values()})
        if target in dcs:
            return [name for name, c in servers.items() if c["dc"] == target]
        raise LabError(
            f"unknown target {target!r}: a data centre ({', '.join(dcs)}) "
            f"or a server ({', '.join(servers)})"
        )

    def _dc_link(self, state: Mapping[str, Any], target: str) -> netns.NetPlan | None:
        """The namespaces when *target* is a whole DC of a namespaced lab, else None."""
        net = self._net(state)
        return net if net is not None and target in net.dcs else None

    def _programs_of(self, state: Mapping[str, Any], target: str) -> list[str]:
        """The programs (workers) that run in data centre *target*."""
        return [
            name
            for name, c in state["components"].items()
            if c["kind"] == "worker" and c.get("dc") == target
        ]

    def break_(self, target: str, fault: str) -> list[str]:
        """Inject *fault* into server *target*, or every server of data centre *target*.

        Returns the servers that now have the fault (and, for a power loss of a
        DC, its workers). Breaking a server that already has this fault
        changes nothing; a hang on a powered-off server is skipped.
        """
        if fault not in FAULTS:
            raise LabError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
        with self._locked():
            state = self._require_running()
            servers = self._servers_of(state, target)
            net = self._dc_link(state, target)
            affected: list[str] = []
            errors: list[str] = []
            try:
                if net is not None and fault == "network":
                    netns.set_link(net, target, up=False)
                for server_id in servers:
                    try:
                        if self._inject(state, server_id, fault, linked=net is not None):
                            affected.append(server_id)
                    except LabError as exc:
                        errors.append(f"{server_id}: {exc}")
                if fault == "power" and target not in state["components"]:  # a whole DC
                    affected += self._power_off_dc(state, net, target)
            finally:
                self._save(state)
            if fault == "network" and affected and net is None:
                self._reload_netsim(state)
                self._wait_cut(state, affected)
            if errors:
                raise LabError(f"{fault} fault not applied everywhere: " + "; ".join(errors))
            return affected

    def _power_off_dc(self, state: dict[str, Any], net: netns.NetPlan | None, dc: str) -> list[str]:
        """*dc*'s workers die with its servers, recorded down: in a namespaced lab
        every process left in the DC's namespace, else each worker's process group."""
        programs = self._programs_of(state, dc)
        if net is not None:
            killed = netns.kill_all_in(net.dc(dc).namespace)
        else:
            killed = [
                pid
                for pid, _state in (self._pid_state(state["components"][n]) for n in programs)
                if pid is not None
            ]
            for pid in killed:
                pid_identity.signal_group(pid, signal.SIGKILL)
            wait_gone(killed, time.monotonic() + 5.0)
        for name in programs:
            entry = {"at": now_text(), "pid": state["components"][name].get("pid")}
            state["faults"].setdefault(name, {})["power"] = entry
        state.setdefault("dc_power_kills", {})[dc] = killed
        return programs

    def _inject(
        self, state: dict[str, Any], server_id: str, fault: str, *, linked: bool = False
    ) -> bool:
        comp = state["components"][server_id]
        recorded: dict[str, Any] = state["faults"].setdefault(server_id, {})
        if fault in recorded:
            return True
        entry: dict[str, Any] = {"at": now_text()}
        if fault == "power":
            pid, _pstate = self._pid_state(comp)
            if pid is not None:
                send_signal(pid, signal.SIGKILL)
                wait_gone([pid], time.monotonic() + 2.0)
                entry["pid"] = pid
            recorded.pop("hang", None)
        elif fault == "hang":
            if "power" in recorded:
                return False
            pid, _pstate = self._pid_state(comp)
            if pid is None:
                raise LabError("its process is not running: nothing to hang")
            send_signal(pid, signal.SIGSTOP)
            entry["pid"] = pid
        elif fault == "disk":
            root = self.data_root(server_id, comp["data_root"])
            if not root.exists():
                raise LabError(f"its data root {root} is missing already")
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            quarantine = self.directory / "quarantine" / f"{server_id}-{stamp}"
            quarantine.parent.mkdir(parents=True, exist_ok=True)
            root.rename(quarantine)
            entry["quarantine"] = str(quarantine)
            entry["data_root"] = str(root)
        elif fault in mirror_faults.SURROUNDING_FAULTS:
            if "power" in recorded or "hang" in recorded:
                raise LabError(f"{fault}: the server is down already")
            entry.update(mirror_faults.inject(self, state, server_id, fault))
        elif fault == "network" and linked:
            entry["link"] = comp["dc"]  # the DC's link is down: nothing per server
        elif fault == "network":
            cut = self._read_cut()
            if server_id not in cut:
                self._write_cut([*cut, server_id])
        recorded[fault] = entry
        return True

    def heal(self, target: str, *, timeout: float = 15.0) -> list[str]:
        """Undo every fault recorded on *target*; returns the servers healed.

        Waits until the healed servers answer through their public ports again. A
        target without faults is left alone.
        """
        with self._locked():
            state = self._require_running()
            servers = self._servers_of(state, target)
            servers += self._programs_of(state, target)
            linked = state["faults"].get(target, {}).get("network", {}).get("link")
            if linked:  # one server of a DC whose link is down: the link is the DC's
                raise LabError(
                    f"{target}'s network fault is data centre {linked}'s link: heal {linked}"
                )
            healed: list[str] = []
            reload_net = False
            try:
                for server_id in servers:
                    recorded = state["faults"].get(server_id) or {}
                    if not recorded:
                        continue
                    for fault in _HEAL_ORDER:
                        if fault in recorded:
                            self._undo(state, server_id, fault, recorded[fault])
                            reload_net |= fault == "network"
                            del recorded[fault]
                    state["faults"].pop(server_id, None)
                    healed.append(server_id)
            finally:
                self._save(state)
            if reload_net:
                self._reload_netsim(state)
            if healed:
                self._wait_healthy(state, healed, time.monotonic() + timeout)
            return healed

    def _undo(
        self, state: dict[str, Any], server_id: str, fault: str, entry: Mapping[str, Any]
    ) -> None:
        comp = state["components"][server_id]
        if fault in mirror_faults.SURROUNDING_FAULTS:
            mirror_faults.undo(self, state, server_id, fault, dict(entry))
        elif fault == "disk":
            root = self.data_root(server_id, comp["data_root"])
            quarantine = Path(entry["quarantine"])
            if not quarantine.exists():
                raise LabError(f"{server_id}: quarantined data root {quarantine} has disappeared")
            if root.exists() or root.is_symlink():
                # The server made a new, empty data root meanwhile: the quarantined one
                # is the real data; keep the new one aside for a post-mortem.
                root.rename(quarantine.with_name(quarantine.name + "-recreated"))
            root.parent.mkdir(parents=True, exist_ok=True)
            quarantine.rename(root)
        elif fault == "network" and entry.get("link"):
            net = self._net(state)
            if net is not None:
                netns.set_link(net, entry["link"], up=True)
        elif fault == "network":
            self._write_cut([s for s in self._read_cut() if s != server_id])
        elif fault == "hang":
            pid, _ = self._pid_state(comp)
            if pid is not None:
                send_signal(pid, signal.SIGCONT)
        elif fault == "power":
            pid, _pstate = self._pid_state(comp)
            if pid is None:
                self._spawn(state, server_id)

    def _wait_cut(self, state: Mapping[str, Any], servers: list[str], timeout: float = 3.0) -> None:
        """Wait until netsim black-holes the servers' public SSH ports (it polls too)."""
        comps = state["components"]
        net = self._net(state)
        host = netns.public_host(net)

        def answering(names: list[str]) -> list[str]:
            ports = [(s, comps[s]["ports"]["ssh"]) for s in names]
            return [s for s, port in ports if probe_ssh(port, timeout=0.3, host=host) is None]

        deadline = time.monotonic() + timeout
        left = list(servers)
        while left and time.monotonic() < deadline:
            left = netns.call_in(net.wan if net else None, functools.partial(answering, left))
            if left:
                time.sleep(0.1)
