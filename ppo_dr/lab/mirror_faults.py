"""The lab's faults of a server's surroundings: its host key, its disk size, its link, its clock.

Each is injected into one server and undone by ``ppo-dr lab heal`` like the others
(:mod:`ppo_dr.lab.faults` records them in ``lab.json``); what it does, and its undo:

    host-key    a new host key for the server, which restarts   heal: the pinned key back, restart
    disk-full   its data root on a tmpfs with one page free     heal: the contents copied back
                (root only): a lock file fits, the next               to disk, the tmpfs unmounted
                snapshot's packs fail with ENOSPC
    latency     netsim delays every byte to and from it         heal: the entry removed
                (300 ms round trip) and loses 2 % of chunks
                (each lost one arrives a retransmission later)
    clock-skew  its clock 2 h ahead: the times it reports and   heal: the skew removed
                the mtimes of the files it writes

Nothing here knows about mirrors or snapshots: which server to hit and what must hold
is the chaos suite's (:mod:`ppo_dr.lab.chaos.mirror_faults`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ppo_dr.errors import LabError
from ppo_dr.lab import keys as lab_keys
from ppo_dr.lab.clock import CLOCK_FILE
from ppo_dr.lab.netsim import SLOW_FILE, Impairment
from ppo_dr.lab.processes import send_signal, wait_gone
from ppo_dr.lab.seed import tree_bytes
from ppo_dr.lab.topology import write_text_atomic

if TYPE_CHECKING:
    from ppo_dr.lab.faults import LabFaults

SURROUNDING_FAULTS: Final = ("host-key", "disk-full", "latency", "clock-skew")
#: Issue 10's link to the off-site mirror: 300 ms and 2 % loss.
LATENCY: Final = Impairment(rtt_ms=300.0, loss=0.02)
#: Issue 10's skewed app server: 2 h ahead.
CLOCK_SKEW_S: Final = 7200.0
_PAGE: Final = 4096
#: Free space left on the small disk: one page, room for a repository's lock file and
#: for nothing else, so no snapshot can be completed on it (one needs at least a pack,
#: an index and the snapshot file, a page each on a tmpfs). With 64 KiB, a quiet
#: client's incrementals fitted and were listed complete (the chaos matrix, 2026-12-05).
DISK_FULL_HEADROOM: Final = _PAGE
#: The file that takes up the small disk's room beyond the headroom (not copied back).
FILLER_NAME: Final = ".ppo-dr-disk-full-filler"
_STOP_S: Final = 10.0


def inject(lab: LabFaults, state: dict[str, Any], server_id: str, fault: str) -> dict[str, Any]:
    """Inject *fault* into *server_id*; the entry lab.json keeps for :func:`undo`."""
    if fault == "host-key":
        return _swap_host_key(lab, state, server_id)
    if fault == "disk-full":
        comp = state["components"][server_id]
        pid, _pstate = lab._pid_state(comp)
        return _mount_small_disk(lab.data_root(server_id, comp["data_root"]), pid)
    if fault == "latency":
        _set_entry(lab.directory / "net" / SLOW_FILE, server_id, LATENCY.model_dump())
        return {"rtt_ms": LATENCY.rtt_ms, "loss": LATENCY.loss}
    if fault == "clock-skew":
        write_text_atomic(
            lab.server_dir(server_id) / CLOCK_FILE, json.dumps({"skew_s": CLOCK_SKEW_S})
        )
        return {"skew_s": CLOCK_SKEW_S}
    raise LabError(f"{fault!r} is not a fault of a server's surroundings")


def undo(
    lab: LabFaults, state: dict[str, Any], server_id: str, fault: str, entry: dict[str, Any]
) -> None:
    """Undo what :func:`inject` did (its *entry*)."""
    if fault == "host-key":
        pinned = Path(entry["pinned"])
        key = Path(entry["key"])
        if pinned.exists():
            pinned.replace(key)
            pinned.with_name(pinned.name + ".pub").replace(key.with_name(key.name + ".pub"))
        _restart(lab, state, server_id)
    elif fault == "disk-full":
        _unmount_small_disk(Path(entry["data_root"]), Path(entry["aside"]), entry.get("ns_pid"))
    elif fault == "latency":
        _set_entry(lab.directory / "net" / SLOW_FILE, server_id, None)
    elif fault == "clock-skew":
        (lab.server_dir(server_id) / CLOCK_FILE).unlink(missing_ok=True)


# --------------------------------------------------------------------------- host key


def _swap_host_key(lab: LabFaults, state: dict[str, Any], server_id: str) -> dict[str, Any]:
    """A new host key in the server's key file (the pinned one kept aside), then a restart."""
    config = json.loads(Path(state["components"][server_id]["config"]).read_text("utf-8"))
    key = Path(config["host_key"])
    pinned = key.with_name(key.name + ".pinned")
    old_public = lab_keys.read_public_key(key)
    key.replace(pinned)
    key.with_name(key.name + ".pub").replace(pinned.with_name(pinned.name + ".pub"))
    new_public = lab_keys.generate_keypair(key, f"{server_id}@lab-replaced")
    _restart(lab, state, server_id)
    return {"key": str(key), "pinned": str(pinned), "old": old_public, "new": new_public}


def _restart(lab: LabFaults, state: dict[str, Any], server_id: str) -> None:
    """Stop the server (SIGTERM) and start it again on the same ports and disk."""
    pid, _pstate = lab._pid_state(state["components"][server_id])
    if pid is not None:
        send_signal(pid, signal.SIGTERM)
        if wait_gone([pid], time.monotonic() + _STOP_S):
            send_signal(pid, signal.SIGKILL)
            wait_gone([pid], time.monotonic() + 2.0)
    lab._spawn(state, server_id)


# --------------------------------------------------------------------------- small disk


def _mount_namespace(pid: int | None) -> int | None:
    """*pid* when that process lives in a mount namespace other than ours (a server of
    the namespaced lab: ``ip netns exec`` gives it a private one, where a mount made
    here is not seen); None when it shares ours (the loopback lab) or is not running."""
    if pid is None:
        return None
    try:
        theirs = Path(f"/proc/{pid}/ns/mnt").readlink()
    except OSError:
        return None
    return pid if theirs != Path("/proc/self/ns/mnt").readlink() else None


def _in_view(root: Path, ns_pid: int | None) -> Path:
    """*root* as the process *ns_pid* sees it (through ``/proc/PID/root``), or as is."""
    return Path(f"/proc/{ns_pid}/root") / root.relative_to("/") if ns_pid else root


def _mount_cmd(argv: list[str], ns_pid: int | None) -> list[str]:
    return ["nsenter", f"--mount=/proc/{ns_pid}/ns/mnt", *argv] if ns_pid else argv


def _mount_small_disk(root: Path, pid: int | None = None) -> dict[str, Any]:
    """Move *root*'s contents onto a tmpfs mounted at *root*, sized to leave almost no
    room; mounted where the server process *pid* sees it (its own mount namespace in
    the namespaced lab)."""
    if os.geteuid() != 0:
        raise LabError("the disk-full fault mounts a small tmpfs: run the lab as root")
    if not root.is_dir():
        raise LabError(f"its data root {root} is missing")
    ns_pid = _mount_namespace(pid)
    size = tree_bytes(root, block=_PAGE) + DISK_FULL_HEADROOM  # what they take on a tmpfs
    aside = root.with_name(root.name + ".before-disk-full")
    root.rename(aside)
    root.mkdir()
    seen = _in_view(root, ns_pid)
    try:
        mount = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "ppo-disk-full"]
        _run(_mount_cmd([*mount, str(root)], ns_pid))
        shutil.copytree(aside, seen, symlinks=True, dirs_exist_ok=True)
        _fill(seen, DISK_FULL_HEADROOM)
    except (OSError, LabError) as exc:
        if os.path.ismount(seen):
            _run(_mount_cmd(["umount", "-l", str(root)], ns_pid))
        root.rmdir()
        aside.rename(root)
        raise LabError(f"could not put {root} on a small disk: {exc}") from exc
    return {"data_root": str(root), "aside": str(aside), "size": size, "ns_pid": ns_pid}


def _fill(root: Path, headroom: int) -> None:
    """Take up the room of the disk at *root* beyond *headroom* bytes with one file (the
    size estimate of the copied tree leaves more, by how much depends on the tree)."""
    stat = os.statvfs(root)
    extra = stat.f_bavail * stat.f_frsize - headroom
    if extra > 0:
        with (root / FILLER_NAME).open("wb") as filler:
            filler.truncate(0)
            for start in range(0, extra, 1 << 20):
                filler.write(b"\0" * min(1 << 20, extra - start))  # written: tmpfs allocates


def _unmount_small_disk(root: Path, aside: Path, ns_pid: int | None = None) -> None:
    """Copy what the small disk holds now back to a real directory, unmount, swap it in.
    A server whose mount namespace is gone (it died) took the small disk with it: the
    copy from before the fault goes back."""
    healed = root.with_name(root.name + ".after-disk-full")
    if ns_pid is not None and _mount_namespace(ns_pid) is None:
        root.rmdir()  # the empty directory under the vanished mount
        aside.rename(root)
        return
    seen = _in_view(root, ns_pid)
    if os.path.ismount(seen):
        shutil.rmtree(healed, ignore_errors=True)
        shutil.copytree(seen, healed, symlinks=True, ignore=shutil.ignore_patterns(FILLER_NAME))
        _run(_mount_cmd(["umount", "-l", str(root)], ns_pid))
        root.rmdir()
        healed.rename(root)
    shutil.rmtree(aside, ignore_errors=True)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")


# --------------------------------------------------------------------------- files


def _set_entry(path: Path, server_id: str, value: dict[str, Any] | None) -> None:
    """Set (or with None remove) *server_id* in the ``{"servers": {...}}`` file *path*."""
    doc: dict[str, Any] = {"servers": {}}
    if path.exists():
        doc = json.loads(path.read_text("utf-8"))
    servers = dict(doc.get("servers") or {})
    if value is None:
        servers.pop(server_id, None)
    else:
        servers[server_id] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"servers": servers}, indent=2))
