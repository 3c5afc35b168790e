"""Data centres as Linux network namespaces: the lab's distributed topology.

As root, a lab can put each data centre in a network namespace of its own, so that
"the DC is unreachable" is a real link going down rather than a rule in our network
simulator. The layout (``docs/lab.md``, "The namespaced lab"):

    <prefix>-wan    the "internet": bridge br0 at 10.<n>.0.1/16; netsim, the front
                    door and the workload run here
    <prefix>-ctl    the control site: PostgreSQL, Redis, the API servers, the
                    services, at 10.<n>.200.1/16
    <prefix>-<dc>   one per data centre (k-th DC at 10.<n>.<k>.1/16): its servers
                    and its workers

Every member namespace is joined to the bridge by a veth pair (``v<k>`` / ``vctl``
on the bridge side in ``wan``, ``eth0`` inside). Nothing is added to the host's own
namespace, so no address or interface of the lab is visible outside and two labs
never collide (interface names are per namespace; the prefix is derived from the lab
directory). Deleting the namespaces deletes every veth with them.

:class:`NetPlan` is the pure part (names and addresses); the functions below run
``ip`` and need root. :func:`call_in` runs a function on a thread that entered a
namespace (``setns``), which is how a process in the host namespace (the supervisor,
a test) opens a socket inside one.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ppo_dr.errors import LabError
from ppo_dr.lab import pid_identity
from ppo_dr.pids import alive
from ppo_dr.transport.dial import on_entered_thread

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
PREFIX_STEM = "ppo"
WAN = "wan"
CONTROL = "ctl"
BRIDGE = "br0"
INNER_LINK = "eth0"
#: Third octet of the control site's address; data centres count from 1 below it.
CONTROL_OCTET = 200
MAX_DCS = CONTROL_OCTET - 1
_CLONE_NEWNET = 0x40000000
_IP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Member:
    """One namespace joined to the bridge: the control site or a data centre."""

    key: str  # "ctl" or the DC id
    namespace: str
    address: str  # without the prefix length
    bridge_port: str  # the veth end on the bridge (in the wan namespace)


@dataclass(frozen=True)
class NetPlan:
    """Names and addresses of one lab's namespaces; no I/O."""

    prefix: str
    octet: int  # the n of 10.n.0.0/16
    dcs: tuple[str, ...]

    @property
    def wan(self) -> str:
        return f"{self.prefix}-{WAN}"

    @property
    def wan_address(self) -> str:
        """Where netsim (every server's public ports) and the front door listen."""
        return f"10.{self.octet}.0.1"

    @property
    def control(self) -> Member:
        return Member(
            CONTROL, f"{self.prefix}-{CONTROL}", f"10.{self.octet}.{CONTROL_OCTET}.1", "vctl"
        )

    def dc(self, dc_id: str) -> Member:
        """The namespace of data centre *dc_id*; :class:`LabError` names the known ones."""
        if dc_id not in self.dcs:
            raise LabError(f"unknown data centre {dc_id!r}; known: {', '.join(self.dcs)}")
        k = self.dcs.index(dc_id) + 1
        return Member(dc_id, f"{self.prefix}-{dc_id}", f"10.{self.octet}.{k}.1", f"v{k}")

    @property
    def members(self) -> tuple[Member, ...]:
        return (self.control, *(self.dc(d) for d in self.dcs))

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of the plan, the wan (the bridge's) last."""
        return (*(m.namespace for m in self.members), self.wan)

    def as_dict(self) -> dict[str, object]:
        """What lab.json records under ``net``."""
        return {
            "prefix": self.prefix,
            "octet": self.octet,
            "dcs": list(self.dcs),
            "wan": {"namespace": self.wan, "address": self.wan_address},
            "members": {
                m.key: {"namespace": m.namespace, "address": m.address, "link": m.bridge_port}
                for m in self.members
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> NetPlan:
        dcs = data["dcs"]
        octet = data["octet"]
        if not isinstance(dcs, list) or not isinstance(octet, int):
            raise LabError("lab.json: malformed net section")
        return cls(str(data["prefix"]), octet, tuple(str(d) for d in dcs))


def plan_for(directory: Path, dcs: Sequence[str]) -> NetPlan:
    """The plan of the lab in *directory*: a prefix and an octet derived from its path.

    Two labs on one machine get different prefixes (namespace names are global); the
    octet only makes addresses easier to tell apart, since labs never share a link.
    """
    if not dcs:
        raise LabError("a namespaced lab needs at least one data centre")
    if len(dcs) > MAX_DCS:
        raise LabError(f"a namespaced lab holds at most {MAX_DCS} data centres (got {len(dcs)})")
    if len(set(dcs)) != len(dcs):
        raise LabError(f"data centre ids repeat: {', '.join(dcs)}")
    digest = _digest(directory)
    return NetPlan(prefix_for(directory), 16 + int(digest[6:10], 16) % 200, tuple(dcs))


def _digest(directory: Path) -> str:
    return hashlib.sha1(str(Path(directory).resolve()).encode()).hexdigest()  # noqa: S324


def prefix_for(directory: Path) -> str:
    """The namespace-name prefix of the lab in *directory* (``ppo`` + 6 hex digits)."""
    return f"{PREFIX_STEM}{_digest(directory)[:6]}"


def public_host(net: NetPlan | None) -> str:
    """Where every public port (netsim, the front door) listens: loopback, or the wan."""
    return net.wan_address if net else "127.0.0.1"


def unavailable_reason() -> str | None:
    """Why this machine cannot host namespaces for us (None when it can)."""
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    return None


def exec_prefix(namespace: str | None) -> list[str]:
    """The command prefix that runs a program inside *namespace* (none for the host)."""
    return ["ip", "netns", "exec", namespace] if namespace else []


def _ip(*args: str) -> None:
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False
    )
    if done.returncode:
        raise LabError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


def existing(prefix: str) -> list[str]:
    """Namespaces on this machine whose name starts with ``<prefix>-``."""
    try:
        names = [p.name for p in NETNS_DIR.iterdir()]
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(f"{prefix}-"))


def create(plan: NetPlan) -> None:
    """Make every namespace, the bridge and the veth pairs; on failure undo it all."""
    if existing(plan.prefix):
        raise LabError(
            f"namespaces {', '.join(existing(plan.prefix))} exist already "
            "(another lab in this directory is up: `ppo-dr lab down` first)"
        )
    try:
        _ip("netns", "add", plan.wan)
        _ip("-n", plan.wan, "link", "set", "lo", "up")
        _ip("-n", plan.wan, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", plan.wan, "addr", "add", f"{plan.wan_address}/16", "dev", BRIDGE)
        _ip("-n", plan.wan, "link", "set", BRIDGE, "up")
        for member in plan.members:
            _ip("netns", "add", member.namespace)
            _ip("-n", member.namespace, "link", "set", "lo", "up")
            _ip(
                "-n",
                plan.wan,
                "link",
                "add",
                member.bridge_port,
                "type",
                "veth",
                "peer",
                "name",
                INNER_LINK,
                "netns",
                member.namespace,
            )
            _ip("-n", plan.wan, "link", "set", member.bridge_port, "master", BRIDGE, "up")
            _ip("-n", member.namespace, "addr", "add", f"{member.address}/16", "dev", INNER_LINK)
            _ip("-n", member.namespace, "link", "set", INNER_LINK, "up")
    except BaseException:
        destroy(plan.prefix)
        raise


def set_link(plan: NetPlan, key: str, *, up: bool) -> None:
    """Take the link of data centre (or ``ctl``) *key* to the bridge down or up again."""
    member = plan.control if key == CONTROL else plan.dc(key)
    _ip("-n", plan.wan, "link", "set", member.bridge_port, "up" if up else "down")


def link_is_up(plan: NetPlan, key: str) -> bool:
    """Whether the bridge side of *key*'s link is administratively up."""
    member = plan.control if key == CONTROL else plan.dc(key)
    done = subprocess.run(
        ["ip", "-n", plan.wan, "-o", "link", "show", member.bridge_port],
        capture_output=True,
        text=True,
        timeout=_IP_TIMEOUT,
        check=False,
    )
    flags = done.stdout.split("<", 1)[-1].split(">", 1)[0].split(",")
    return done.returncode == 0 and "UP" in flags


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in(namespace: str) -> list[int]:
    """Every live process whose network namespace is *namespace*, children included."""
    wanted = _identity(NETNS_DIR / namespace)
    if wanted is None:
        return []
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            same = _identity(proc / "ns" / "net") == wanted
            if same and alive(int(proc.name)):
                found.append(int(proc.name))
    return found


def kill_all_in(namespace: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process inside *namespace* (a power loss); the pids killed."""
    killed: list[int] = []
    for _round in range(3):  # a dying parent may still fork; sweep again
        pids = pids_in(namespace)
        if not pids:
            break
        for pid in pids:
            pid_identity.signal_group(pid, signal.SIGCONT)
            pid_identity.signal_group(pid, signal.SIGKILL)
        killed.extend(p for p in pids if p not in killed)
        left = pid_identity.until_gone(pids, timeout)
        if left:
            raise LabError(f"{namespace}: processes {left} survived SIGKILL")
    return killed


def destroy(prefix: str) -> list[str]:
    """Kill every process in the namespaces named ``<prefix>-*`` and delete them.

    Safe to repeat; returns the namespaces deleted. A namespace lives on while a
    process holds it, so the processes go first.
    """
    names = existing(prefix)
    for name in names:
        kill_all_in(name)
    for name in names:
        _ip("netns", "del", name)
    return names


def enter(namespace: str) -> None:
    """Move the calling thread into *namespace* (``setns``; only this thread moves)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / namespace, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise LabError(f"cannot enter network namespace {namespace}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def call_in(namespace: str | None, work: Callable[[], T]) -> T:
    """Run *work* on a thread inside *namespace* and return its result (or raise).

    Sockets *work* opens belong to that namespace. ``None`` runs it right here.
    """
    if namespace is None:
        return work()
    return on_entered_thread(functools.partial(enter, namespace), work, f"netns-{namespace}")
