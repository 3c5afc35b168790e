"""The lab's front door: the one URL users know, routed to each client's current server.

``python -m ppo_dr.lab.frontdoor --config DIR/frontdoor.json`` (docs/lab.md).

In production a load balancer or DNS decides which server answers for a client; in
the lab this process does, from the placements in the state store, which is exactly
what a failover changes. A moved client therefore becomes reachable on its new
server within a second of the compare-and-set (placements are cached for at most
:data:`PLACEMENT_MAX_AGE_S`), with no restart and no fleet.yaml edit.

``/c/<client>/<rest>`` is proxied to ``http://<server.http>/c/<client>/<rest>``, where
the server endpoint is the *public* one from fleet.yaml (through netsim, so network
cuts apply). Method, query, body and end-to-end headers are passed on, responses are
streamed back, and every routed response carries ``X-PPO-Route: <client> -> <server>``.
When the server does not answer the front door says so plainly, as JSON naming the
client and server: 502 when the connection is refused or reset (power loss), 504
when nothing comes back within :data:`UPSTREAM_TIMEOUT_S` (hang, network cut). A
client without a placement is 404. ``/health`` is the front door's own health;
``/routes`` lists client -> server.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from pydantic import Field
from yarl import URL

from ppo_dr.errors import DRError, LabError
from ppo_dr.ids import is_valid_id
from ppo_dr.lab.procutil import (
    FleetWatch,
    LabConfig,
    WatchedFile,
    read_config,
    run_component,
    stop_event,
    write_json_atomic,
)

log = logging.getLogger("ppo_dr.lab.frontdoor")

PLACEMENT_MAX_AGE_S: Final = 0.5
#: A placement table older than this is not served: the store stopped answering.
PLACEMENT_STALE_LIMIT_S: Final = 10.0
UPSTREAM_TIMEOUT_S: Final = 5.0
ROUTE_HEADER: Final = "X-PPO-Route"
MAX_BODY: Final = 16 << 20
SHUTDOWN_GRACE_S: Final = 3.0
MAX_PROCESSES: Final = 8
_PR_SET_PDEATHSIG: Final = 1

# Headers that describe one hop, not the request (RFC 9110 7.6.1), plus those the
# HTTP libraries recompute for the next hop.
HOP_BY_HOP: Final = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)


class FrontdoorConfig(LabConfig):
    """``frontdoor.json``."""

    lab_dir: Path | None = None
    port: int
    fleet: Path
    store_url: str
    upstream_timeout: float = UPSTREAM_TIMEOUT_S
    #: Address to listen on: loopback, or the wan address in a namespaced lab.
    bind: str = "127.0.0.1"
    #: Processes sharing the port (``SO_REUSEPORT``): this one and ``processes - 1``
    #: helpers it starts and stops. One is plenty for a few clients; at 1,000 (the probe's
    #: 1,000 checks a cycle on top of the workload) one process is CPU-bound.
    processes: int = Field(default=1, ge=1, le=MAX_PROCESSES)
    #: Set in a helper's config: bind with ``SO_REUSEPORT`` and start no helpers.
    helper: bool = False


class PlacementLike(Protocol):
    """The two fields of a :class:`ppo_dr.store.Placement` the front door reads."""

    @property
    def client_id(self) -> str: ...

    @property
    def server_id(self) -> str: ...


class PlacementSource(Protocol):
    """What the front door needs from the store (``ppo_dr.store.Store`` is one)."""

    def placements(self) -> Sequence[PlacementLike]: ...


class PlacementCache:
    """Every client's server, read from the store at most every *max_age* seconds.

    One query for all clients (not one per request), in a worker thread (store calls
    are blocking SQLAlchemy). Requests never wait for the store once it has answered:
    a stale table is served while one refresh runs in the background, so a slow store
    (PostgreSQL under load takes seconds) does not stall every request twice a second.
    A moved client is therefore routed anew within *max_age* plus one query. Only the
    first read, and a table older than *stale_limit* (the store stopped answering),
    make requests wait, and then a store error reaches them (503).
    """

    def __init__(
        self,
        store: PlacementSource,
        max_age: float = PLACEMENT_MAX_AGE_S,
        stale_limit: float = PLACEMENT_STALE_LIMIT_S,
    ) -> None:
        self._store = store
        self._max_age = max_age
        self._stale_limit = stale_limit
        self._routes: dict[str, str] = {}
        self._read_at: float | None = None
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None

    async def routes(self) -> dict[str, str]:
        """client id -> server id; raises the store's :class:`DRError` if it cannot answer."""
        now = asyncio.get_running_loop().time()
        if self._age(now) < self._max_age:
            return self._routes
        if self._age(now) < self._stale_limit:
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.create_task(self._refresh_in_background())
            return self._routes
        async with self._lock:
            if self._age(asyncio.get_running_loop().time()) >= self._stale_limit:
                await self._read()
        return self._routes

    def _age(self, now: float) -> float:
        return float("inf") if self._read_at is None else now - self._read_at

    async def _refresh_in_background(self) -> None:
        async with self._lock:
            try:
                await self._read()
            except DRError as exc:
                log.warning("state store cannot answer, routing from the last read: %s", exc)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        rows = await loop.run_in_executor(None, self._store.placements)
        routes = {p.client_id: p.server_id for p in rows}
        for client, server in routes.items():
            old = self._routes.get(client)
            if old is not None and old != server:
                log.info("route of %s changed: %s -> %s", client, old, server)
        self._routes, self._read_at = routes, started


class ServerEndpoints:
    """Each server's public HTTP endpoint (``host:port``) from fleet.yaml.

    The file is checked (one ``stat``) on every lookup, so a changed endpoint applies
    to the next request; re-reading it runs in a worker thread, because validating a
    1,000-client fleet takes seconds (tens of seconds on a loaded machine) and on the
    event loop it stopped every request, ``/health`` included, for that long.
    Lookups that find the file changed wait for that one re-read together.
    """

    def __init__(self, fleet: FleetWatch) -> None:
        self._fleet = fleet
        self._file = WatchedFile(fleet.path)
        self._endpoints: dict[str, str] = {}
        self._reload: asyncio.Future[None] | None = None

    async def endpoint(self, server_id: str) -> str | None:
        if self._file.changed():
            self._reload = asyncio.ensure_future(self._load())
        reload = self._reload
        if reload is not None:
            await asyncio.shield(reload)
            if self._reload is reload:
                self._reload = None
        return self._endpoints.get(server_id)

    async def _load(self) -> None:
        fleet = await asyncio.get_running_loop().run_in_executor(None, self._fleet.current)
        if fleet is not None:
            self._endpoints = {
                s.id: f"{s.http.host}:{s.http.port}" for s in fleet.servers if s.http is not None
            }


class Frontdoor:
    """The proxy: placement -> server -> public HTTP endpoint -> streamed answer."""

    def __init__(
        self,
        placements: PlacementCache,
        endpoints: ServerEndpoints,
        session: aiohttp.ClientSession,
        upstream_timeout: float = UPSTREAM_TIMEOUT_S,
    ) -> None:
        self.placements = placements
        self.endpoints = endpoints
        self.session = session
        self.upstream_timeout = upstream_timeout

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/health", self.health)
        app.router.add_get("/routes", self.routes)
        app.router.add_route("*", "/c/{client}", self.proxy)
        app.router.add_route("*", "/c/{client}/{rest:.*}", self.proxy)
        return app

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"frontdoor": True, "ok": True})

    async def routes(self, _request: web.Request) -> web.Response:
        try:
            routes = await self.placements.routes()
        except DRError as exc:
            return web.json_response({"error": f"state store: {exc}"}, status=503)
        return web.json_response(dict(sorted(routes.items())))

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        client = request.match_info["client"]
        if not is_valid_id(client):
            return web.json_response({"error": "unknown client", "client": client}, status=404)
        try:
            server_id = (await self.placements.routes()).get(client)
        except DRError as exc:
            log.warning("state store cannot answer: %s", exc)
            return web.json_response({"error": f"state store: {exc}", "client": client}, status=503)
        if server_id is None:
            return web.json_response({"error": "unknown client", "client": client}, status=404)
        route = f"{client} -> {server_id}"

        def failure(status: int, error: str) -> web.Response:
            body = {"error": error, "client": client, "server": server_id}
            return web.json_response(body, status=status, headers={ROUTE_HEADER: route})

        endpoint = await self.endpoints.endpoint(server_id)
        if endpoint is None:
            return failure(502, f"server {server_id} has no HTTP endpoint in the fleet")
        # encoded=True: pass path and query on byte for byte (no re-quoting of %2F etc.)
        url = URL(f"http://{endpoint}{request.rel_url.raw_path_qs}", encoded=True)
        headers = _forward_headers(request.headers)
        headers["X-Forwarded-For"] = request.remote or ""
        headers["X-Forwarded-Host"] = request.host
        headers[ROUTE_HEADER] = route
        body = await request.read()
        try:
            async with asyncio.timeout(self.upstream_timeout):
                upstream = await self.session.request(
                    request.method, url, headers=headers, data=body or None, allow_redirects=False
                )
        except TimeoutError:
            return failure(504, f"no answer from {server_id} within {self.upstream_timeout:g} s")
        except aiohttp.ClientError as exc:
            return failure(502, f"{server_id} refused or dropped the connection: {exc}")
        try:
            return await self._stream_back(request, upstream, route)
        finally:
            upstream.release()

    async def _stream_back(
        self, request: web.Request, upstream: aiohttp.ClientResponse, route: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP:
                response.headers.add(name, value)
        response.headers[ROUTE_HEADER] = route
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Headers are gone already: all we can do is cut the response short.
            log.warning("%s: upstream failed mid-body: %s", route, exc)
            raise
        await response.write_eof()
        return response


def _forward_headers(headers: Any) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in HOP_BY_HOP:
            out.add(name, value)
    return out


async def serve(config: FrontdoorConfig, stop: asyncio.Event) -> None:
    """Run the front door until *stop*."""
    from ppo_dr.store import Store

    store = Store(config.store_url)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=config.upstream_timeout, sock_read=config.upstream_timeout
    )
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
    ) as session:
        door = Frontdoor(
            PlacementCache(store),
            ServerEndpoints(FleetWatch(config.fleet)),
            session,
            config.upstream_timeout,
        )
        runner = web.AppRunner(door.app(), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        try:
            try:
                shared = config.helper or config.processes > 1
                await web.TCPSite(
                    runner, config.bind, config.port, reuse_address=True, reuse_port=shared
                ).start()
            except OSError as exc:
                raise LabError(f"front door cannot listen on port {config.port}: {exc}") from exc
            log.info("front door ready on %s:%d, store %s", config.bind, config.port, store.url)
            await stop.wait()
            log.info("front door stopping")
        finally:
            await runner.cleanup()
            await asyncio.get_running_loop().run_in_executor(None, store.close)


def _die_with_parent() -> None:
    """In a helper, before exec: SIGTERM when the front door dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


async def start_helpers(
    config_path: Path, config: FrontdoorConfig
) -> list[asyncio.subprocess.Process]:
    """Start ``processes - 1`` helpers on the same port, from a config beside *config_path*.

    The kernel spreads connections over every process listening with ``SO_REUSEPORT``.
    Each helper keeps its own placement table and fleet, refreshed as this one's are.
    """
    if config.helper or config.processes == 1:
        return []
    helper_config = config_path.with_name(f"{config_path.stem}.helper.json")
    write_json_atomic(
        helper_config, config.model_copy(update={"helper": True}).model_dump(mode="json")
    )
    argv = [sys.executable, "-m", "ppo_dr.lab.frontdoor", "--config", str(helper_config)]
    helpers = []
    for _ in range(config.processes - 1):
        helpers.append(await asyncio.create_subprocess_exec(*argv, preexec_fn=_die_with_parent))
    log.info("front door helpers: %s", ", ".join(str(h.pid) for h in helpers))
    return helpers


async def stop_helpers(helpers: Sequence[asyncio.subprocess.Process]) -> None:
    """SIGTERM every helper, then SIGKILL the ones still there after the grace period."""
    for helper in helpers:
        if helper.returncode is None:
            helper.terminate()
    for helper in helpers:
        try:
            await asyncio.wait_for(helper.wait(), SHUTDOWN_GRACE_S + 2)
        except TimeoutError:
            helper.kill()
            await helper.wait()


async def main(config_path: Path) -> None:
    """Entry point body: read the config, keep alembic's schema check out of the log, serve."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    config = read_config(config_path, FrontdoorConfig)
    stop = stop_event()
    helpers = await start_helpers(config_path, config)
    try:
        await serve(config, stop)
    finally:
        await stop_helpers(helpers)


if __name__ == "__main__":
    raise SystemExit(run_component("frontdoor", main))
