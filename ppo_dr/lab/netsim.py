"""The lab's network: each server's public ports forwarded to its internal ones, and cuts.

``python -m ppo_dr.lab.netsim --config DIR/net/routes.json`` (docs/lab.md).

Everything the runbooks, the front door and the workload say to a lab server goes
through here, so a network fault can be made without root: a *cut* server's public
ports keep accepting connections but nothing passes, in either direction, on new or
existing connections. That is what a real cut looks like to a client: connects may
succeed (here they always do), then reads time out. Nothing is reset or closed, so
probes and runbooks meet timeouts, not errors that would tell them the host is down.

Semantics, precisely:

* **cut**: reading from both sockets of every connection of the server stops; bytes
  the kernel already accepted stay queued (in socket buffers, or in the few bytes
  read in the same loop iteration as the cut) and are delivered *late* after the
  heal, never dropped. A connection opened during the cut is accepted and held
  without connecting to the server. A held connection whose client gives up (its
  socket leaves ESTABLISHED: FIN or RST) is closed within a second; the server side
  learns of it only then, as after a real heal.
* **heal**: held connections connect to the server (if they had not yet) and resume
  forwarding, queued bytes first. Peers that timed out meanwhile see whatever their
  own protocol does with late data.
* **slow** (``net/slow.json``, the latency fault): every chunk read from either side
  is handed on half the round trip later, in order; a chunk "lost" (with the given
  probability) arrives one retransmission timeout (the round trip + 200 ms, as Linux
  computes it at least) later still, and holds up those behind it, as TCP does. The
  reader pauses while more than :data:`HIGH_WATER` bytes wait.
* **server down** (power fault: its process killed): the connection to the internal
  port is refused, and netsim closes the client's connection (FIN). A real powered-off
  machine would leave the SYN unanswered instead; the lab models power loss as
  "refused", which clients see as an immediate disconnect. Hangs (SIGSTOP) look real:
  the kernel still accepts, nothing answers.

Routes and cuts are re-read on SIGHUP and whenever routes.json or cut.json change
(polled every 0.5 s): new routes start listening, removed routes stop listening and
their connections are closed, a changed target applies to new connections. A port that
cannot be bound yet (still held by a dying process) is retried at every poll.

Forwarding is plain asyncio protocols: data read from one socket is handed to the
other transport as is (no extra copies unless the receiver is slow, when asyncio
buffers it), TCP_NODELAY on both sides, and back-pressure by pausing the reader when
the other side's buffer passes :data:`HIGH_WATER`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
from collections import deque
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, ValidationError

from ppo_dr.errors import LabError
from ppo_dr.lab.procutil import LabConfig, WatchedFile, read_config, run_component, stop_event

log = logging.getLogger("ppo_dr.lab.netsim")

POLL_S: Final = 0.5
SWEEP_S: Final = 1.0
CONNECT_TIMEOUT_S: Final = 10.0
HIGH_WATER: Final = 4 << 20
LOW_WATER: Final = 1 << 20
_TCP_ESTABLISHED: Final = 1
SLOW_FILE: Final = "slow.json"
#: Linux's least retransmission timeout, added to the round trip for a lost chunk.
MIN_RTO_S: Final = 0.2

Side = Literal["client", "upstream"]


class Route(LabConfig):
    """One forwarded port: ``listen_host:listen`` (public) to ``target_host:target``
    (internal); both hosts are loopback unless the lab is namespaced."""

    server: str
    dc: str = ""
    kind: str = ""
    listen: int = Field(ge=1, le=65535)
    target: int = Field(ge=1, le=65535)
    listen_host: str = "127.0.0.1"
    target_host: str = "127.0.0.1"


class RoutesConfig(LabConfig):
    """``net/routes.json``."""

    lab_dir: Path | None = None
    cut_file: Path | None = None
    routes: tuple[Route, ...] = ()


class CutFile(LabConfig):
    """``net/cut.json``: the servers whose network is cut."""

    servers: tuple[str, ...] = ()


class Impairment(LabConfig):
    """A slow, lossy link: the round trip added, and the share of chunks lost once."""

    rtt_ms: float = Field(ge=0, le=60_000)
    loss: float = Field(ge=0, le=0.5)

    def delay_s(self, rng: random.Random) -> float:
        """How long one chunk takes one way: half the round trip, plus a
        retransmission timeout if this chunk is the one lost."""
        one_way = self.rtt_ms / 2000.0
        lost = self.loss > 0 and rng.random() < self.loss
        return one_way + (self.rtt_ms / 1000.0 + MIN_RTO_S if lost else 0.0)


class SlowFile(LabConfig):
    """``net/slow.json``: the servers whose links are slow, and how."""

    servers: dict[str, Impairment] = Field(default_factory=dict)


class _End(asyncio.Protocol):
    """One socket of a forwarded connection; hands what it reads to the other end."""

    def __init__(self, link: Link, side: Side) -> None:
        self.link = link
        self.side = side
        self.transport: asyncio.Transport | None = None
        self.peer: _End | None = None
        self.write_paused = False  # our send buffer is full: the peer must stop reading
        self.pending: list[bytes] = []  # read but not yet forwarded (cut, or no peer yet)
        self.eof = False
        self.eof_forwarded = False
        self.delayed: deque[tuple[float, bytes]] = deque()  # (due, data) on a slow link
        self.delayed_bytes = 0
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        if self.side == "client":
            transport.pause_reading()  # until the upstream is connected and not cut
            self.link.accepted(self)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        slow = self.link.sim.slow.get(self.link.server)
        if self.link.frozen or peer is None or peer.transport is None or self.pending:
            self.pending.append(data)
        elif slow is not None or self.delayed:
            self.delay(data, slow)
        else:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        self.link.forward_eof(self)
        return True  # keep the other direction open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
        self.link.close(abort=exc is not None)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.link.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.link.update_reading()

    # -- helpers

    def delay(self, data: bytes, slow: Impairment | None) -> None:
        """Hand *data* on after the slow link's delay, never before what came first."""
        loop = asyncio.get_running_loop()
        wait = slow.delay_s(self.link.sim.rng) if slow is not None else 0.0
        self._due = max(loop.time() + wait, self._due)
        self.delayed.append((self._due, data))
        self.delayed_bytes += len(data)
        if self._timer is None:
            self._timer = loop.call_at(self._due, self._deliver)
        if self.delayed_bytes >= HIGH_WATER:
            self.link.update_reading()

    def _deliver(self) -> None:
        """Write what is due to the peer; come back for the rest; then any EOF."""
        loop = asyncio.get_running_loop()
        self._timer = None
        peer = self.peer
        while self.delayed and self.delayed[0][0] <= loop.time():
            _due, data = self.delayed.popleft()
            self.delayed_bytes -= len(data)
            if peer is not None and peer.transport is not None:
                peer.transport.write(data)
        if self.delayed:
            self._timer = loop.call_at(self.delayed[0][0], self._deliver)
        elif self.eof:
            self.link.forward_eof(self)
        self.link.update_reading()

    def may_read(self) -> bool:
        peer = self.peer
        return (
            not self.link.frozen
            and peer is not None
            and peer.transport is not None
            and not peer.write_paused
            and self.delayed_bytes < HIGH_WATER
        )

    def flush_pending(self) -> None:
        peer = self.peer
        if self.link.frozen or peer is None or peer.transport is None:
            return
        if self.pending:
            peer.transport.write(b"".join(self.pending))
            self.pending.clear()
        if self.eof:
            self.link.forward_eof(self)

    def tcp_state(self) -> int | None:
        """The kernel's TCP state of this socket (1 = established), if it can be read."""
        if self.transport is None:
            return None
        sock = self.transport.get_extra_info("socket")
        try:
            return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0])
        except (OSError, AttributeError):
            return None


class Link:
    """One client connection through netsim, and its connection to the server."""

    def __init__(self, sim: Netsim, route: Route) -> None:
        self.sim = sim
        self.route = route
        self.server = route.server
        self.client = _End(self, "client")
        self.upstream: _End | None = None
        self.frozen = sim.is_cut(route.server)
        self.closed = False
        self._connecting: asyncio.Task[None] | None = None

    def accepted(self, _client: _End) -> None:
        self.sim.links.add(self)
        if not self.frozen:
            self._connect()

    def _connect(self) -> None:
        if self.upstream is None and self._connecting is None and not self.closed:
            self._connecting = asyncio.get_running_loop().create_task(self._open_upstream())

    async def _open_upstream(self) -> None:
        loop = asyncio.get_running_loop()
        end = _End(self, "upstream")
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: end, self.route.target_host, self.route.target),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError) as exc:
            log.info(
                "%s %s: server port %d unreachable (%s): closing the client connection",
                self.server,
                self.route.kind or "port",
                self.route.target,
                exc,
            )
            self._connecting = None
            self.close(abort=False)
            return
        self._connecting = None
        if self.closed:
            if end.transport is not None:
                end.transport.close()
            return
        self.upstream = end
        end.peer, self.client.peer = self.client, end
        if self.frozen:  # cut while connecting: hold it
            self.update_reading()
        else:
            self.resume()

    def update_reading(self) -> None:
        """Read from a side only when not cut and the other side can take more."""
        for end in (self.client, self.upstream):
            if end is None or end.transport is None:
                continue
            if end.may_read():
                end.transport.resume_reading()
            else:
                end.transport.pause_reading()

    def freeze(self) -> None:
        self.frozen = True
        self.update_reading()

    def resume(self) -> None:
        """Heal (or first connect): forward what was held, then keep forwarding."""
        self.frozen = False
        if self.upstream is None:
            self._connect()
            return
        self.client.flush_pending()
        self.upstream.flush_pending()
        self.update_reading()

    def forward_eof(self, end: _End) -> None:
        peer = end.peer
        if self.frozen or end.pending or end.delayed or peer is None or peer.transport is None:
            return  # sent later by flush_pending or by the slow link's delivery
        if not end.eof_forwarded:
            end.eof_forwarded = True
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
        if self.client.eof_forwarded and self.upstream and self.upstream.eof_forwarded:
            self.close(abort=False)

    def client_gone(self) -> bool:
        """While held: has the client given up (its socket no longer established)?"""
        state = self.client.tcp_state()
        return state is not None and state != _TCP_ESTABLISHED

    def close(self, abort: bool) -> None:
        """Close both sockets: abort (RST) if one side was reset, else close (FIN)."""
        if self.closed:
            return
        self.closed = True
        self.sim.links.discard(self)
        if self._connecting is not None:
            self._connecting.cancel()
        for end in (self.client, self.upstream):
            if end is not None and end.transport is not None:
                if abort:
                    end.transport.abort()
                else:
                    end.transport.close()


class Netsim:
    """The listeners, the live links and the cut set; :meth:`apply` reconciles them."""

    def __init__(self) -> None:
        self.routes: dict[int, Route] = {}
        self.listeners: dict[int, asyncio.Server] = {}
        self.links: set[Link] = set()
        self.cut: frozenset[str] = frozenset()
        self.slow: dict[str, Impairment] = {}
        self.rng = random.Random()

    def is_cut(self, server: str) -> bool:
        return server in self.cut

    async def apply(
        self,
        routes: tuple[Route, ...],
        cut: frozenset[str],
        slow: dict[str, Impairment] | None = None,
    ) -> None:
        """Make listeners, routes, cuts and slow links match the config; idempotent."""
        slow = slow or {}
        if slow != self.slow:
            for server, how in sorted(slow.items()):
                log.warning("link of %s SLOW: %s", server, how)
            for server in sorted(set(self.slow) - set(slow)):
                log.warning("link of %s fast again", server)
            self.slow = dict(slow)
        wanted = {route.listen: route for route in routes}
        for port in sorted(set(self.routes) - set(wanted)):
            route = self.routes.pop(port)
            log.info("route removed: %s %s :%d", route.server, route.kind, port)
            listener = self.listeners.pop(port, None)
            if listener is not None:
                listener.close()
            for link in [lk for lk in self.links if lk.route.listen == port]:
                link.close(abort=False)
        for port, route in wanted.items():
            if self.routes.get(port) != route:
                log.info("route: %s %s :%d -> :%d", route.server, route.kind, port, route.target)
            self.routes[port] = route
        for port in sorted(set(self.routes) - set(self.listeners)):
            await self._listen(self.routes[port])
        if cut != self.cut:
            for server in sorted(cut - self.cut):
                log.warning("network of %s CUT", server)
            for server in sorted(self.cut - cut):
                log.warning("network of %s healed", server)
            self.cut = cut
        for link in list(self.links):
            link.route = self.routes.get(link.route.listen, link.route)
            if self.is_cut(link.server) and not link.frozen:
                link.freeze()
            elif not self.is_cut(link.server) and link.frozen:
                link.resume()

    async def _listen(self, route: Route) -> None:
        loop = asyncio.get_running_loop()

        def accept() -> _End:
            # The route is looked up at accept time: a changed target applies at once.
            return Link(self, self.routes.get(route.listen, route)).client

        try:
            self.listeners[route.listen] = await loop.create_server(
                accept, route.listen_host, route.listen, reuse_address=True, backlog=128
            )
        except OSError as exc:
            log.warning("cannot listen on :%d for %s yet: %s", route.listen, route.server, exc)

    def sweep(self) -> None:
        """Close held connections whose clients gave up."""
        for link in [lk for lk in self.links if lk.frozen]:
            if link.client_gone():
                log.info("%s: client left a held connection; closing it", link.server)
                link.close(abort=False)

    def close(self) -> None:
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
        for link in list(self.links):
            link.close(abort=False)


def read_cut(path: Path | None) -> frozenset[str]:
    """The cut servers; a missing file means no cut."""
    if path is None or not path.exists():
        return frozenset()
    try:
        return frozenset(CutFile.model_validate(json.loads(path.read_text())).servers)
    except (OSError, ValueError, ValidationError) as exc:
        raise LabError(f"cannot read cut file {path}: {exc}") from exc


def read_slow(path: Path) -> dict[str, Impairment]:
    """The slow links; a missing file means none."""
    if not path.exists():
        return {}
    try:
        return dict(SlowFile.model_validate(json.loads(path.read_text())).servers)
    except (OSError, ValueError, ValidationError) as exc:
        raise LabError(f"cannot read slow-links file {path}: {exc}") from exc


async def run(config_path: Path, stop: asyncio.Event) -> None:
    """Forward until *stop*; reload on SIGHUP and on changed files."""
    config = read_config(config_path, RoutesConfig)
    cut_path = config.cut_file or config_path.parent / "cut.json"
    slow_path = config_path.parent / SLOW_FILE
    routes_file, cut_file = WatchedFile(config_path), WatchedFile(cut_path)
    slow_file = WatchedFile(slow_path)
    for watched in (routes_file, cut_file, slow_file):
        watched.changed()
    sim = Netsim()
    await sim.apply(config.routes, read_cut(cut_path), read_slow(slow_path))
    log.info("netsim ready: %d routes, cut: %s", len(sim.routes), sorted(sim.cut) or "none")

    hup = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    last_sweep = loop.time()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop, hup), POLL_S)
            if stop.is_set():
                break
            if hup.is_set():
                hup.clear()
                for watched in (routes_file, cut_file, slow_file):
                    watched.forget()
            changed = routes_file.changed() | cut_file.changed() | slow_file.changed()
            if changed or len(sim.listeners) < len(sim.routes):
                try:
                    config = read_config(config_path, RoutesConfig)
                    cut = read_cut(cut_path)
                    slow = read_slow(slow_path)
                except LabError as exc:
                    log.warning("keeping the current network: %s", exc)
                else:
                    await sim.apply(config.routes, cut, slow)
            if loop.time() - last_sweep >= SWEEP_S:
                last_sweep = loop.time()
                sim.sweep()
    finally:
        sim.close()
        log.info("netsim stopped")


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def main(config_path: Path) -> None:
    await run(config_path, stop_event())


if __name__ == "__main__":
    raise SystemExit(run_component("netsim", main))
