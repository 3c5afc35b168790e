"""The SaaS app of a lab app or spare server: each client's page and its journal over HTTP.

It exists so data loss is measured, not assumed: the workload appends numbered records
to each client's journal through the front door, and after a failover the restored
journal is compared with the writes this app acknowledged. Hence the one rule that
matters here: a 200 to ``POST /c/<client>/journal`` is sent only after the line is
fsynced to this server's disk.

A client is served when the fleet knows it *and* its data directory exists on this
server (``<fs_root><data_root>/<client.data_path>``): after a restore onto a spare, the
spare serves the client without a restart. All file work runs in worker threads so a
slow disk never stalls the SSH side of the same process. See docs/lab.md for the
interface.
"""

from __future__ import annotations

import asyncio
import html
import os
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

from aiohttp import web

from ppo_dr.errors import UnsafeInputError
from ppo_dr.lab.restricted_exec import (
    JOURNAL,
    ClientFrozen,
    ClientNotHere,
    DataRootMissing,
    ServerDisk,
)

SERVER_HEADER: Final = "X-PPO-Server"
PAGE_RECORDS: Final = 10
MAX_BODY: Final = 64 * 1024

T = TypeVar("T")


def build_app(disk: ServerDisk) -> web.Application:
    """The aiohttp application serving *disk*'s clients."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_errors_as_json])
    app["disk"] = disk

    async def stamp(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers[SERVER_HEADER] = disk.server_id

    app.on_response_prepare.append(stamp)
    app.router.add_get("/health", _health)
    app.router.add_get("/c/{client}/", _client_page)
    app.router.add_get("/c/{client}/health", _client_health)
    app.router.add_post("/c/{client}/journal", _append_journal)
    app.router.add_get("/c/{client}/journal", _read_journal)
    return app


async def _in_thread(func: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, partial(func, *args))


def _disk(request: web.Request) -> ServerDisk:
    disk: ServerDisk = request.app["disk"]
    return disk


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def _errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Map the disk's typed errors to the HTTP statuses of docs/lab.md, as JSON."""
    client = request.match_info.get("client")
    try:
        return await handler(request)
    except UnsafeInputError as exc:
        return _error(400, str(exc), client=client)
    except ClientNotHere as exc:
        return _error(404, str(exc), client=client)
    except ClientFrozen:
        return _error(503, "frozen", client=client)
    except DataRootMissing as exc:
        return _error(503, str(exc), client=client)
    except OSError as exc:
        return _error(503, f"disk error: {exc.strerror or exc}", client=client)


async def _health(request: web.Request) -> web.Response:
    disk = _disk(request)
    problem = await _in_thread(disk.data_root_problem)
    if problem is not None:
        return web.json_response(
            {"server": disk.server_id, "ok": False, "error": problem}, status=503
        )
    return web.json_response({"server": disk.server_id, "ok": True})


async def _client_health(request: web.Request) -> web.Response:
    disk = _disk(request)
    client = request.match_info["client"]

    def check() -> tuple[bool, bool]:
        cdir = disk.client_dir(client)
        return os.access(cdir / JOURNAL, os.R_OK), disk.is_frozen(cdir)

    readable, frozen = await _in_thread(check)
    if not readable:
        return _error(503, "journal missing or unreadable", client=client, server=disk.server_id)
    return web.json_response(
        {"client": client, "server": disk.server_id, "ok": True, "frozen": frozen}
    )


async def _append_journal(request: web.Request) -> web.Response:
    disk = _disk(request)
    client = request.match_info["client"]
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "body is not JSON", client=client)
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object", client=client)
    seq, ts, writer = body.get("seq"), body.get("ts"), body.get("writer")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return _error(400, "seq must be a non-negative integer", client=client)
    if not isinstance(ts, str) or not isinstance(writer, str):
        return _error(400, "ts and writer must be strings", client=client)
    record = {"seq": seq, "ts": ts, "writer": writer, "server": disk.server_id}
    await _in_thread(disk.append_journal, client, record)
    return web.json_response({"seq": seq, "server": disk.server_id})


async def _read_journal(request: web.Request) -> web.Response:
    disk = _disk(request)
    client = request.match_info["client"]
    try:
        after = int(request.query.get("after", "-1"))
    except ValueError:
        return _error(400, "after must be an integer", client=client)
    return web.json_response(await _in_thread(disk.read_journal, client, after))


async def _client_page(request: web.Request) -> web.Response:
    disk = _disk(request)
    client = request.match_info["client"]

    def render() -> str:
        cdir = disk.client_dir(client)
        files = size = 0
        for top, _dirs, names in os.walk(cdir):
            for name in names:
                st = Path(top, name).lstat()
                files += 1
                size += st.st_size
        records = disk.read_journal(client)[-PAGE_RECORDS:]
        rows = "\n".join(
            f"<tr><td>{r['seq']}</td><td>{html.escape(str(r.get('ts', '')))}</td>"
            f"<td>{html.escape(str(r.get('writer', '')))}</td></tr>"
            for r in records
        )
        frozen = " (frozen)" if disk.is_frozen(cdir) else ""
        name = html.escape(client)
        server = html.escape(disk.server_id)
        return (
            f"<!doctype html><html><head><title>{name}</title></head><body>"
            f"<h1>{name}{frozen}</h1><p>served by {server}: {files} files, {size} bytes</p>"
            f"<table><tr><th>seq</th><th>ts</th><th>writer</th></tr>\n{rows}\n</table>"
            "</body></html>\n"
        )

    return web.Response(text=await _in_thread(render), content_type="text/html")
