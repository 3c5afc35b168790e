"""The lab's users: numbered journal writes for every client, and a record of each one acked.

``python -m ppo_dr.lab.workload --config DIR/workload.json`` (docs/lab.md).

Data loss in a drill is measured, not assumed. Every ``interval`` seconds each client
of the fleet gets one ``POST /c/<client>/journal {"seq", "ts", "writer"}`` through the
front door, all clients concurrently and each with its own short timeout, so a dead
or cut server stalls only its own clients. Only writes the app acknowledged (2xx, sent
after the line was fsynced on the server) go to ``acks.jsonl``; :func:`lost_writes`
then says exactly which acknowledged writes a restored journal lacks.

Sequence numbers are per client, strictly increasing, and never reused: a failed
attempt still uses its number (the server may have written it before the answer was
lost), and a restarted workload continues after the highest number it acknowledged
or attempted (``acks.jsonl`` and ``status.json``), so an old unacknowledged record can
never be mistaken for a new acknowledged one.

Ack records are appended and flushed once per interval, so a ``kill -9`` of the
workload can lose the last interval's ack records: the count of lost writes can then
only be too low by those, never too high. ``status.json`` (rewritten atomically every
interval) says per client how the writes are going.

Each minute's requests per client go to the store (``request_minutes``) when the minute
is over: the load the rebalance planner weighs (in production, the front door's counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import aiohttp
from pydantic import Field

from ppo_dr.errors import DRError
from ppo_dr.lab import procutil
from ppo_dr.lab.restricted_exec import parse_journal

log = logging.getLogger("ppo_dr.lab.workload")

REQUEST_TIMEOUT_S: Final = 2.0
MAX_ERROR_CHARS: Final = 300
DRAIN_GRACE_S: Final = 0.5  # on SIGTERM: a write still in flight after this is not acked


class WorkloadConfig(procutil.LabConfig):
    """``workload.json``; ``status`` defaults to ``DIR/workload/status.json``."""

    lab_dir: Path
    frontdoor: str
    interval: float = Field(default=1.0, gt=0)
    acks: Path
    fleet: Path
    status: Path | None = None
    request_timeout: float = Field(default=REQUEST_TIMEOUT_S, gt=0)
    store_url: str | None = None  # where request counts go (none: not counted)

    @property
    def status_path(self) -> Path:
        return self.status or self.lab_dir / "workload" / "status.json"


# --------------------------------------------------------------------------- pure helpers


def read_acks(acks_path: str | Path) -> list[dict[str, Any]]:
    """Every ack record in *acks_path* (a torn last line is skipped); [] if none yet."""
    try:
        lines = Path(acks_path).read_bytes().splitlines()
    except FileNotFoundError:
        return []
    acks = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("seq"), int) and record.get("client"):
            acks.append(record)
    return acks


def acked_seqs(acks_path: str | Path, client_id: str) -> list[int]:
    """The sequence numbers acknowledged for *client_id*, ascending."""
    return sorted({a["seq"] for a in read_acks(acks_path) if a["client"] == client_id})


def lost_writes(
    acks_path: str | Path, client_id: str, journal_lines: Iterable[str | bytes]
) -> list[int]:
    """The acknowledged writes of *client_id* missing from a journal, ascending.

    *journal_lines* are the lines of the client's ``journal/journal.log`` as found on
    whatever server now holds it (after a restore, say). An empty list means no
    acknowledged write was lost.
    """
    present = {record["seq"] for record in parse_journal(journal_lines)}
    return [seq for seq in acked_seqs(acks_path, client_id) if seq not in present]


def _highest_seqs(acks_path: Path, status_path: Path) -> dict[str, int]:
    """Per client, the highest seq acknowledged or attempted by an earlier run."""
    highest: dict[str, int] = {}
    for ack in read_acks(acks_path):
        highest[ack["client"]] = max(highest.get(ack["client"], 0), ack["seq"])
    try:
        clients = json.loads(status_path.read_text()).get("clients", {})
    except (OSError, ValueError, AttributeError):
        clients = {}
    for client, state in clients.items() if isinstance(clients, dict) else ():
        sent = state.get("last_sent_seq") if isinstance(state, dict) else None
        if isinstance(sent, int):
            highest[client] = max(highest.get(client, 0), sent)
    return highest


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- the writer


@dataclass
class ClientWrites:
    """How the writes of one client are going (one entry of status.json)."""

    next_seq: int
    last_ok_seq: int | None = None
    last_sent_seq: int | None = None
    acked: int = 0
    failures: int = 0
    last_error: str | None = None
    last_server: str | None = None
    in_flight: bool = False

    def status(self) -> dict[str, Any]:
        return {
            "last_ok_seq": self.last_ok_seq,
            "last_sent_seq": self.last_sent_seq,
            "acked": self.acked,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_server": self.last_server,
        }


class RequestTally:
    """Requests sent per client per minute, added to the store once the minute is over.

    The store is written from one thread of its own (opening a store and writing it can
    take seconds on a loaded machine; the writes must not wait for it), and a store that
    cannot take the counts loses those counts, never the writes.
    """

    def __init__(self, store_url: str | None) -> None:
        self.store_url = store_url
        self.minutes: defaultdict[datetime, Counter[str]] = defaultdict(Counter)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="request-counts")
        self._store: Any = None  # a ppo_dr.store.Store, opened on the first flush

    def count(self, client: str) -> None:
        if self.store_url is not None:
            self.minutes[datetime.now(UTC).replace(second=0, microsecond=0)][client] += 1

    def flush(self, *, everything: bool = False) -> None:
        """Hand the minutes that are over (*everything*: the current one too) to the
        store's thread."""
        this_minute = datetime.now(UTC).replace(second=0, microsecond=0)
        done = sorted(m for m in self.minutes if everything or m < this_minute)
        if done:
            self._writer.submit(self._store_counts, {m: self.minutes.pop(m) for m in done})

    def close(self) -> None:
        """Store everything counted, wait for it, close the store."""
        self.flush(everything=True)
        self._writer.shutdown(wait=True)
        if self._store is not None:
            self._store.close()

    def _store_counts(self, counts: dict[datetime, Counter[str]]) -> None:
        assert self.store_url is not None  # nothing is counted without one
        try:
            if self._store is None:
                from ppo_dr.store import Store  # imported here: the writer starts fast

                self._store = Store.open(self.store_url)
            for minute, per_client in counts.items():
                self._store.count_requests(minute, per_client)
        except DRError as exc:
            log.warning("request counts of %d minute(s) not stored: %s", len(counts), exc)


class Workload:
    """One write per client per interval; acks to a file, status to another."""

    def __init__(self, config: WorkloadConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session
        self.fleet = procutil.FleetWatch(config.fleet)
        self.writer = f"workload-{os.getpid()}"
        self.clients: dict[str, ClientWrites] = {}
        self._resume_from = _highest_seqs(config.acks, config.status_path)
        self._new_acks: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._base = config.frontdoor.rstrip("/")
        self.requests = RequestTally(config.store_url)

    def tick(self) -> None:
        """Start a write for every client of the fleet that has none in flight, spread
        evenly over the interval: a 1,000-client lab sending all at once timed every
        write out in the front door's queue."""
        fleet = self.fleet.current()
        clients = list(fleet.clients) if fleet is not None else []
        spacing = self.config.interval / max(len(clients), 1)
        for i, client in enumerate(clients):
            state = self.clients.get(client.id)
            if state is None:
                state = ClientWrites(next_seq=self._resume_from.get(client.id, 0) + 1)
                self.clients[client.id] = state
            if not state.in_flight:
                state.in_flight = True
                write = self._write(client.id, state, delay=i * spacing)
                task = asyncio.get_running_loop().create_task(write)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _write(self, client: str, state: ClientWrites, delay: float = 0.0) -> None:
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                state.in_flight = False
                raise
        seq = state.next_seq
        state.next_seq += 1
        state.last_sent_seq = seq
        state.in_flight = True
        ts = _now()
        self.requests.count(client)
        url = f"{self._base}/c/{client}/journal"
        payload = {"seq": seq, "ts": ts, "writer": self.writer}
        try:
            async with asyncio.timeout(self.config.request_timeout):
                async with self.session.post(url, json=payload) as response:
                    body = await response.read()
                    status = response.status
                    header_server = response.headers.get("X-PPO-Server")
        except TimeoutError:
            self._failed(state, f"no answer within {self.config.request_timeout:g} s")
        except aiohttp.ClientError as exc:
            self._failed(state, f"{type(exc).__name__}: {exc}")
        else:
            if 200 <= status < 300:
                server = _server_of(body) or header_server
                self._new_acks.append({"client": client, "seq": seq, "ts": ts, "server": server})
                state.last_ok_seq = seq
                state.last_server = server
                state.acked += 1
            else:
                text = body.decode("utf-8", "replace").strip()
                self._failed(state, f"HTTP {status}: {text}")
        finally:
            state.in_flight = False

    def _failed(self, state: ClientWrites, error: str) -> None:
        state.failures += 1
        state.last_error = error[:MAX_ERROR_CHARS]

    def record(self, acks_file: IO[str]) -> None:
        """Append the acks gathered since the last call, then rewrite status.json."""
        if self._new_acks:
            acks, self._new_acks = self._new_acks, []
            acks_file.write("".join(json.dumps(a, sort_keys=True) + "\n" for a in acks))
            acks_file.flush()
        procutil.write_json_atomic(
            self.config.status_path,
            {
                "writer": self.writer,
                "updated_at": _now(),
                "interval": self.config.interval,
                "clients": {c: s.status() for c, s in sorted(self.clients.items())},
            },
        )
        self.requests.flush()

    async def drain(self, grace: float) -> None:
        """Give writes in flight *grace* seconds to finish, then abandon them (unacked)."""
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)


def _server_of(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    server = data.get("server") if isinstance(data, dict) else None
    return server if isinstance(server, str) else None


async def run(config: WorkloadConfig, stop: asyncio.Event) -> None:
    """Write until *stop*, one round per interval, without drifting."""
    config.acks.parent.mkdir(parents=True, exist_ok=True)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        workload = Workload(config, session)
        log.info(
            "workload %s writing every %g s via %s; resuming after %s",
            workload.writer,
            config.interval,
            config.frontdoor,
            workload._resume_from or "nothing",
        )
        loop = asyncio.get_running_loop()
        with config.acks.open("a", encoding="utf-8") as acks_file:
            next_tick = loop.time()
            try:
                while not stop.is_set():
                    workload.tick()
                    next_tick += config.interval
                    if next_tick < loop.time():  # fell behind (a slow disk): skip, do not burst
                        next_tick = loop.time() + config.interval
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), next_tick - loop.time())
                    workload.record(acks_file)
            finally:
                await workload.drain(DRAIN_GRACE_S)
                workload.record(acks_file)
                workload.requests.close()
                log.info("workload stopped")


async def main(config_path: Path) -> None:
    await run(procutil.read_config(config_path, WorkloadConfig), procutil.stop_event())


if __name__ == "__main__":
    raise SystemExit(procutil.run_component("workload", main))
