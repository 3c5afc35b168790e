"""Probe checks: one HTTP(S) or TCP check per target, a whole cycle run concurrently.

This is the only module of :mod:`ppo_dr.probe` that does I/O. Everything it learns is
reduced to an :class:`Observation` (ok or not, how long, why), which the pure state
machine in :mod:`ppo_dr.probe.state` turns into transitions. A check never raises for
a failing target: a refused port, a TLS error, a 503 or a timeout is an observation,
not an exception, so one bad target cannot stop the cycle for the other 999.

Why aiohttp: on this machine a 1,020-target cycle took 1.7 s with aiohttp and 4.9-9.7 s
with httpx (``PERF-NOTES.md``); ``bench/probe_cycle.py`` re-measures ours.

Concurrency is bounded by a semaphore *and* a connector of the same size; the check's
clock and timeout start only once the check holds a slot, so a check that waited for
a slot is not blamed for the wait (a cycle of 1,000 targets with a few hung ones must
not turn healthy targets into timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Self

import aiohttp

from ppo_dr.probe.state import Observation

DEFAULT_CONCURRENCY: Final = 300
_BODY_LIMIT: Final = 64 * 1024  # a health page is small; never read a whole download
_REASON_LEN: Final = 200


@dataclass(frozen=True, slots=True)
class HttpCheck:
    """GET *url*; healthy if the status is expected, the body matches and it was fast enough.

    Redirects are not followed: a health URL that redirects (to a login page, say) is
    reporting something other than health, so a 3xx fails unless listed as expected.

    ``latency_budget_ms``: an answer slower than this is a failure ("slow"), even if it
    is a 200 -- users experience a hung page as an outage.
    """

    target_id: str
    url: str
    expect_status: frozenset[int] = frozenset({200})
    body_contains: str | None = None
    latency_budget_ms: float | None = None
    verify_tls: bool = True


@dataclass(frozen=True, slots=True)
class TcpCheck:
    """Open a TCP connection to *host*:*port* and close it (for non-HTTP services)."""

    target_id: str
    host: str
    port: int
    latency_budget_ms: float | None = None


Check = HttpCheck | TcpCheck


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_LEN else text[: _REASON_LEN - 1] + "…"


def _os_reason(exc: OSError) -> str:
    """'connection refused', not "Connect call failed ('10.0.0.1', 80)"."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return exc.strerror or str(exc) or type(exc).__name__


def _over_budget(check: Check, latency_ms: float) -> str | None:
    budget = check.latency_budget_ms
    if budget is not None and latency_ms > budget:
        return f"slow: {latency_ms:.0f} ms > budget {budget:.0f} ms"
    return None


class Prober:
    """Runs check cycles over one shared :class:`aiohttp.ClientSession`.

    *vantage* names where the checks are made from (it tags every observation);
    *proxy* sends every HTTP(S) check through that proxy, so one probe process can
    look from several networks (TCP checks cannot go through it).

    Keep one open for the life of the probe flow: re-using keep-alive connections is
    what makes a 1,000-target cycle cheap. Use as ``async with Prober(...) as p``.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        concurrency: int = DEFAULT_CONCURRENCY,
        vantage: str = "default",
        proxy: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.vantage = vantage
        self.proxy = proxy
        self._clock = clock or (lambda: datetime.now(UTC))
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._tls_unverified = ssl.create_default_context()
        self._tls_unverified.check_hostname = False
        self._tls_unverified.verify_mode = ssl.CERT_NONE

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(
            limit=self.concurrency,
            limit_per_host=0,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        # No session-wide timeout: each check applies its own once it holds a slot.
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": "ppo-dr-probe/1", "Cache-Control": "no-cache"},
            auto_decompress=True,
        )
        self._slots = asyncio.Semaphore(self.concurrency)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None

    async def run_cycle(self, checks: Iterable[Check]) -> list[Observation]:
        """Check every target once, concurrently; one observation per check, in order."""
        return list(await asyncio.gather(*(self.check(c) for c in checks)))

    async def check(self, check: Check) -> Observation:
        """Run one check; never raises for a failing target (only on cancellation)."""
        if self._session is None or self._slots is None:
            raise RuntimeError("use the Prober inside 'async with'")
        if self.proxy is not None and isinstance(check, TcpCheck):
            # Checking directly would be a different vantage than the one named.
            raise ValueError(
                f"vantage {self.vantage!r} goes through an HTTP proxy: it cannot run the "
                f"TCP check of {check.target_id}"
            )
        async with self._slots:
            at = self._clock()
            started = time.perf_counter()
            run: Awaitable[str | None] = (
                self._http(check) if isinstance(check, HttpCheck) else self._tcp(check)
            )
            try:
                async with asyncio.timeout(self.timeout_s):
                    problem = await run
            except TimeoutError:
                problem = f"timeout: no answer within {self.timeout_s:g} s"
            except aiohttp.ClientConnectorCertificateError as exc:
                problem = _short(f"TLS certificate: {exc.certificate_error}")
            except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
                problem = _short(f"TLS: {exc}")
            except aiohttp.ClientConnectorError as exc:
                problem = _short(f"connect: {_os_reason(exc.os_error)}")
            except OSError as exc:
                problem = _short(f"connect: {_os_reason(exc)}")
            except aiohttp.ClientError as exc:
                problem = _short(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a bug in one check must not cost the other 999
                problem = _short(f"probe error {type(exc).__name__}: {exc}")
            latency_ms = (time.perf_counter() - started) * 1000.0
        if problem is None:
            problem = _over_budget(check, latency_ms)
        return Observation(
            target_id=check.target_id,
            ok=problem is None,
            latency_ms=round(latency_ms, 3),
            reason=problem or "ok",
            at=at,
            vantage=self.vantage,
        )

    async def _http(self, check: HttpCheck) -> str | None:
        assert self._session is not None
        tls: ssl.SSLContext | bool = True if check.verify_tls else self._tls_unverified
        async with self._session.get(
            check.url, ssl=tls, allow_redirects=False, proxy=self.proxy
        ) as response:
            if response.status not in check.expect_status:
                return f"HTTP {response.status}"
            body = await _read_head(response)  # read, so the connection can be re-used
            if check.body_contains is not None and check.body_contains.encode() not in body:
                return "body mismatch: expected text not found"
        return None

    async def _tcp(self, check: TcpCheck) -> str | None:
        _reader, writer = await asyncio.open_connection(check.host, check.port)
        writer.close()
        with contextlib.suppress(OSError):  # the connect succeeded: that was the check
            await writer.wait_closed()
        return None


async def _read_head(response: aiohttp.ClientResponse) -> bytes:
    """The body up to ``_BODY_LIMIT`` bytes (``read(n)`` alone may stop at a chunk)."""
    chunks: list[bytes] = []
    size = 0
    while size < _BODY_LIMIT:
        chunk = await response.content.read(_BODY_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def run_cycle(
    checks: Sequence[Check],
    *,
    timeout_s: float,
    concurrency: int = DEFAULT_CONCURRENCY,
    vantage: str = "default",
    proxy: str | None = None,
) -> list[Observation]:
    """One cycle with a fresh session: for one-off checks and tests.

    A long-running probe keeps a :class:`Prober` open instead, to re-use connections.
    """
    async with Prober(
        timeout_s=timeout_s, concurrency=concurrency, vantage=vantage, proxy=proxy
    ) as prober:
        return await prober.run_cycle(checks)
