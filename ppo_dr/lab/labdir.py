"""One lab directory on disk: its paths, ``lab.json`` and the lock that serialises changes.

Everything the supervisor knows is in ``lab.json`` (layout in ``docs/lab.md``); every
change to it, to ``fleet.yaml`` or to ``net/cut.json`` happens under the directory's
lock, so two ``ppo-dr lab`` commands never interleave. :class:`LabDir` is the base the
other parts of :class:`ppo_dr.lab.supervisor.Lab` build on.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from ppo_dr.errors import LabError
from ppo_dr.filelock import exclusive_lock
from ppo_dr.lab import keys as lab_keys
from ppo_dr.lab.netns import NetPlan
from ppo_dr.lab.topology import write_text_atomic

Fault = Literal[
    "power", "hang", "disk", "network", "host-key", "disk-full", "latency", "clock-skew"
]
FAULTS: tuple[str, ...] = get_args(Fault)

LAB_FILE = "lab.json"
LOCK_FILE = ".lab.lock"


def now_text() -> str:
    """The time now, UTC, as lab.json records it."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class LabDir:
    """The files of the embedded lab fleet in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).expanduser().resolve()

    # ---- paths

    @property
    def fleet_file(self) -> Path:
        return self.directory / "fleet.yaml"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def operator_key(self) -> Path:
        return self.directory / "keys" / lab_keys.OPERATOR_KEY

    @property
    def store_url(self) -> str:
        """The state store as this process sees it: a lab that recorded a database
        (the distributed lab's PostgreSQL) names it as the host sees it, unless
        ``$PPO_DR_DB_URL`` (set for the processes inside its namespaces) says where;
        otherwise the SQLite file in the lab."""
        recorded = (self._load() or {}).get("store")
        if recorded:
            return os.environ.get("PPO_DR_DB_URL") or str(recorded["url"])
        return f"sqlite:///{self.directory / 'state.db'}"

    @property
    def inner_store_url(self) -> str:
        """The state store as the lab's namespaces see it (the same as
        :attr:`store_url` in a lab without a recorded database)."""
        recorded = (self._load() or {}).get("store")
        return str(recorded["inner_url"]) if recorded else self.store_url

    @property
    def state_file(self) -> Path:
        return self.directory / LAB_FILE

    @property
    def routes_file(self) -> Path:
        return self.directory / "net" / "routes.json"

    @property
    def cut_file(self) -> Path:
        return self.directory / "net" / "cut.json"

    def server_dir(self, server_id: str) -> Path:
        return self.directory / "servers" / server_id

    def data_root(self, server_id: str, data_root: str) -> Path:
        """Where a server's data root (``/srv/ppo``) is on this machine."""
        return self.server_dir(server_id) / "fs" / data_root.lstrip("/")

    def log_file(self, name: str) -> Path:
        return self.directory / "logs" / f"{name}.log"

    # ---- lab.json

    def _load(self) -> dict[str, Any] | None:
        try:
            text = self.state_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LabError(f"cannot read {self.state_file}: {exc.strerror}") from exc
        try:
            state = json.loads(text)
        except ValueError as exc:
            raise LabError(f"{self.state_file} is not valid JSON: {exc}") from exc
        if not isinstance(state, dict) or "components" not in state:
            raise LabError(f"{self.state_file} is not a lab state file")
        return state

    @staticmethod
    def _net(state: Mapping[str, Any]) -> NetPlan | None:
        """The namespaces of a namespaced lab (None for a loopback lab)."""
        net = state.get("net")
        return NetPlan.from_dict(net) if net else None

    def _require(self) -> dict[str, Any]:
        state = self._load()
        if state is None:
            raise LabError(
                f"no lab in {self.directory} "
                f"(start one with `ppo-dr lab up --dir {self.directory}`)"
            )
        return state

    def _require_running(self) -> dict[str, Any]:
        state = self._require()
        if state.get("state") != "running":
            raise LabError(
                f"the lab in {self.directory} is not running (state: {state.get('state')}); "
                "`ppo-dr lab up` first"
            )
        return state

    def _save(self, state: dict[str, Any]) -> None:
        state["updated_at"] = now_text()
        write_text_atomic(self.state_file, json.dumps(state, indent=1, ensure_ascii=False) + "\n")

    @contextlib.contextmanager
    def _locked(
        self, timeout: float = 60.0, *, required: bool = True, create: bool = False
    ) -> Iterator[None]:
        """Serialise changes to the lab (lab.json, fleet.yaml, cut.json) across processes."""
        if create:
            self.directory.mkdir(parents=True, exist_ok=True)
        elif not self.directory.is_dir():
            raise LabError(f"no lab in {self.directory} (the directory does not exist)")
        with exclusive_lock(self.directory / LOCK_FILE, timeout) as held:
            if not held and required:
                raise LabError(
                    f"the lab in {self.directory} is busy (another `ppo-dr lab` "
                    "command holds its lock); try again"
                )
            yield

    # ---- net/cut.json: the servers whose network is cut

    def _read_cut(self) -> list[str]:
        try:
            data = json.loads(self.cut_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [s for s in data.get("servers", []) if isinstance(s, str)]

    def _write_cut(self, servers: list[str]) -> None:
        write_text_atomic(self.cut_file, json.dumps({"servers": sorted(set(servers))}) + "\n")
