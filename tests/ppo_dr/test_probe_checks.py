"""Checks against real aiohttp servers on 127.0.0.1: every way a target can fail is an
observation with a reason, never an exception, and a cycle is bounded by the timeout."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ppo_dr.probe import HttpCheck, Observation, Prober, TcpCheck, run_cycle

pytestmark = pytest.mark.timeout(60)


async def _ok(_r: web.Request) -> web.Response:
    return web.Response(text='{"status": "ok", "app": "ppo"}')


async def _unavailable(_r: web.Request) -> web.Response:
    return web.Response(status=503, text="maintenance")


async def _slow(_r: web.Request) -> web.Response:
    await asyncio.sleep(0.4)
    return web.Response(text="ok")


async def _moved(_r: web.Request) -> web.Response:
    raise web.HTTPFound("/login")


async def _hang(_r: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.Response(text="too late")


@asynccontextmanager
async def server(tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    app = web.Application()
    for path, handler in {
        "/health": _ok,
        "/down": _unavailable,
        "/slow": _slow,
        "/hang": _hang,
        "/moved": _moved,
    }.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def free_port() -> int:
    """A port nobody listens on (bound, then released): connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(coro: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(coro())


def test_http_outcomes() -> None:
    async def go() -> list[Observation]:
        async with server() as base:
            checks = [
                HttpCheck("ok", f"{base}/health"),
                HttpCheck("body-ok", f"{base}/health", body_contains='"status": "ok"'),
                HttpCheck("body-mismatch", f"{base}/health", body_contains="degraded"),
                HttpCheck("503", f"{base}/down"),
                HttpCheck("503-expected", f"{base}/down", expect_status=frozenset({503})),
                HttpCheck("404", f"{base}/nope"),
                HttpCheck("slow", f"{base}/slow", latency_budget_ms=150),
                HttpCheck("slow-in-budget", f"{base}/slow", latency_budget_ms=2000),
                HttpCheck("hang", f"{base}/hang"),
                HttpCheck("refused", f"http://127.0.0.1:{free_port()}/health"),
                HttpCheck("redirect", f"{base}/moved"),
                HttpCheck("bad-url", "nonsense"),
            ]
            return await run_cycle(checks, timeout_s=1.0, vantage="test")

    started = time.perf_counter()
    obs = {o.target_id: o for o in run(go)}
    assert time.perf_counter() - started < 5
    assert {k for k, o in obs.items() if o.ok} == {
        "ok",
        "body-ok",
        "503-expected",
        "slow-in-budget",
    }
    assert obs["ok"].reason == "ok" and obs["ok"].vantage == "test"
    assert obs["body-mismatch"].reason == "body mismatch: expected text not found"
    assert obs["503"].reason == "HTTP 503"
    assert obs["404"].reason == "HTTP 404"
    assert obs["slow"].reason.startswith("slow: ") and "budget 150 ms" in obs["slow"].reason
    assert obs["slow"].latency_ms >= 390
    assert obs["hang"].reason == "timeout: no answer within 1 s"
    assert 990 <= obs["hang"].latency_ms < 2000
    assert obs["refused"].reason == "connect: connection refused"
    assert obs["redirect"].reason == "HTTP 302"  # a health URL must not redirect
    assert not obs["bad-url"].ok and "nonsense" in obs["bad-url"].reason
    assert all(o.at.tzinfo is dt.UTC for o in obs.values())


def test_tcp_outcomes() -> None:
    async def go() -> list[Observation]:
        async with server() as base:
            port = int(base.rsplit(":", 1)[1])
            return await run_cycle(
                [TcpCheck("open", "127.0.0.1", port), TcpCheck("closed", "127.0.0.1", free_port())],
                timeout_s=1.0,
            )

    opened, closed = run(go)
    assert opened.ok and opened.reason == "ok"
    assert not closed.ok and closed.reason == "connect: connection refused"


def _self_signed(tmp: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return context


def test_tls_errors_are_failures(tmp_path: Path) -> None:
    tls = _self_signed(tmp_path)

    async def go() -> list[Observation]:
        async with server(tls) as base:
            return await run_cycle(
                [
                    HttpCheck("verified", f"{base}/health"),
                    HttpCheck("unverified", f"{base}/health", verify_tls=False),
                ],
                timeout_s=2.0,
            )

    verified, unverified = run(go)
    assert not verified.ok and verified.reason.startswith("TLS")
    assert unverified.ok


def test_slot_wait_is_not_blamed_on_the_target() -> None:
    """With 2 slots and 10 checks of 0.4 s (five waves, 2 s in all), each check still
    gets its whole 1.2 s timeout: a clock started before the slot would fail the last
    waves. The margin per check (0.8 s) keeps a loaded CI machine from failing it."""

    async def go() -> list[Observation]:
        async with server() as base, Prober(timeout_s=1.2, concurrency=2) as prober:
            return await prober.run_cycle([HttpCheck(f"s{i}", f"{base}/slow") for i in range(10)])

    assert all(o.ok for o in run(go))


def test_prober_needs_its_context() -> None:
    async def go() -> None:
        await Prober(timeout_s=1).check(HttpCheck("x", "http://127.0.0.1:1/"))

    with pytest.raises(RuntimeError, match="async with"):
        run(go)
    with pytest.raises(ValueError, match="timeout"):
        Prober(timeout_s=0)
    with pytest.raises(ValueError, match="concurrency"):
        Prober(timeout_s=1, concurrency=0)


def test_a_cycle_over_many_targets_reuses_the_session() -> None:
    async def go() -> tuple[float, list[Observation]]:
        async with server() as base, Prober(timeout_s=2.0) as prober:
            checks = [HttpCheck(f"t{i}", f"{base}/health") for i in range(300)]
            await prober.run_cycle(checks)
            started = time.perf_counter()
            obs = await prober.run_cycle(checks)
            return time.perf_counter() - started, obs

    took, obs = run(go)
    assert all(o.ok for o in obs) and len(obs) == 300
    # The figure is bench/probe_cycle.py's; this only catches checks run one by one.
    assert took < 10.0


def test_a_proxied_vantage_checks_through_its_proxy_and_refuses_tcp() -> None:
    """The proxy is our own aiohttp app answering every absolute-form request it gets,
    so an answer proves the check went through it; a dead proxy fails every check."""
    seen: list[str] = []

    async def proxy_handler(request: web.Request) -> web.Response:
        seen.append(str(request.url))
        return web.Response(text="via proxy")

    async def go() -> tuple[list[Observation], list[Observation]]:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", proxy_handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            target = f"http://127.0.0.1:{free_port()}/health"  # nobody listens: direct fails
            check = HttpCheck("t", target, body_contains="via proxy")
            via = await run_cycle(
                [check], timeout_s=2.0, vantage="eu", proxy=f"http://127.0.0.1:{port}"
            )
            dead = await run_cycle(
                [check], timeout_s=2.0, vantage="x", proxy=f"http://127.0.0.1:{free_port()}"
            )
            async with Prober(timeout_s=1.0, vantage="eu", proxy="http://127.0.0.1:9") as p:
                with pytest.raises(ValueError, match="cannot run the TCP check of tcp"):
                    await p.check(TcpCheck("tcp", "127.0.0.1", port))
        finally:
            await runner.cleanup()
        return via, dead

    via, dead = run(go)
    assert via[0].ok and via[0].vantage == "eu", via
    assert seen and seen[0].endswith("/health")
    assert not dead[0].ok and dead[0].vantage == "x"
