"""A fleet file followed while a long run uses it (the probe runs for minutes).

Servers come and go while a run is under way: a failover provisions a target from
the template, a drill releases its scratch server. A run that keeps the fleet it
read at its start checks a released server until it ends, and declares it down once
its maintenance window is over. :class:`FleetFile` re-reads the file when its stat
changes (one ``stat`` per call, so it can be asked every cycle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ppo_dr.inventory.load import load_fleet
from ppo_dr.inventory.model import Fleet

#: What identifies one version of the file on disk: (mtime_ns, size, inode).
Stamp = tuple[int, int, int]


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass
class FleetFile:
    """*path* and the fleet last read from it."""

    path: Path
    fleet: Fleet
    _seen: Stamp | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._seen = _stamp(self.path)

    def reread(self) -> Fleet | None:
        """The fleet as the file now says, when it changed since the last read; None
        when it did not.

        Raises :class:`~ppo_dr.errors.InventoryError` once per version of the file
        that is invalid or unreadable (an operator's edit half done): :attr:`fleet`
        stays the last good one, and the same bad version is not reported again.
        """
        stamp = _stamp(self.path)
        if stamp == self._seen:
            return None
        self._seen = stamp
        self.fleet = load_fleet(self.path)
        return self.fleet
