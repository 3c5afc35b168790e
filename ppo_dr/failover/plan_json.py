"""The failover plan (:class:`Plan`), its JSON form (content addressed, checked on the
way in) and its table.

``plan_id`` hashes everything a plan decides but its creation time, so the same inputs
give the same id and :func:`plan_from_json` refuses a plan edited after approval.
Untrusted JSON is read through :class:`_Reader`, whose every error names the path
(``plan.moves[2].to_server``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from ppo_dr.failover.model import (
    MODES,
    PLAN_FORMAT,
    PLAN_ID_LEN,
    PLAN_VERSION,
    SNAPSHOT_ID_MAX_LEN,
    SNAPSHOT_ID_TEXT,
    ClientMove,
    Mode,
    ProvisionRequest,
    Refusal,
    Scope,
    Target,
)
from ppo_dr.ids import is_valid_id, shown
from ppo_dr.placement import COUNTRY_RE, PlanError


@dataclass(frozen=True)
class Plan:
    """A failover plan, printable for approval and stored as JSON with the run."""

    plan_id: str
    mode: Mode
    scope: Scope
    target: Target
    created_at: datetime
    moves: tuple[ClientMove, ...]
    provisions: tuple[ProvisionRequest, ...]
    refusals: tuple[Refusal, ...]

    def to_json(self) -> str:
        """The plan as JSON (stable key order; what `failover plan -o` writes)."""
        return plan_to_json(self)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Parse and check a plan; :class:`PlanError` names the field and what is wrong.

        The plan id is recomputed: a plan edited after it was made (and approved) is
        refused rather than run.
        """
        return plan_from_json(text)

    def render(self) -> str:
        """A table an operator reads before approving (and the flow's artifact)."""
        return render_plan(self)


def plan_to_json(plan: Plan) -> str:
    """The plan as JSON (stable key order; what `failover plan -o` writes)."""
    data = {"format": PLAN_FORMAT, "version": PLAN_VERSION, "plan_id": plan.plan_id}
    data["created_at"] = _iso(plan.created_at)
    data.update(_content(plan.mode, plan.scope, plan.target, plan))
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def plan_from_json(text: str) -> Plan:
    """Parse and check a plan; :class:`PlanError` names the field and what is wrong.

    The plan id is recomputed: a plan edited after it was made (and approved) is
    refused rather than run.
    """
    try:
        data = json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PlanError(f"a failover plan must be JSON: {exc}") from None
    plan = _plan_from_data(_Reader(data, "plan"))
    expected = _plan_id(plan.mode, plan.scope, plan.target, plan)
    if plan.plan_id != expected:
        raise PlanError(
            f"plan {plan.plan_id!r} does not match its content (content hashes to "
            f"{expected!r}): it was edited after it was made; plan again"
        )
    return plan


def with_id(plan: Plan) -> Plan:
    """*plan* with its content-derived ``plan_id``."""
    return replace(plan, plan_id=_plan_id(plan.mode, plan.scope, plan.target, plan))


# --------------------------------------------------------------------------- identity, JSON


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def scope_data(scope: Scope) -> dict[str, Any]:
    return {"clients": list(scope.clients), "server": scope.server, "dc": scope.dc}


def target_data(target: Target) -> dict[str, Any]:
    return {"server": target.server, "dc": target.dc, "country": target.country}


def _content(mode: str, scope: Scope, target: Target, plan: Plan) -> dict[str, Any]:
    """Everything a plan decides (what its id hashes): all but plan_id and created_at."""
    return {
        "mode": mode,
        "scope": scope_data(scope),
        "target": target_data(target),
        "moves": [
            {
                "client_id": m.client_id,
                "from_server": m.from_server,
                "to_server": m.to_server,
                "source_mirror": m.source_mirror,
                "snapshot_id": m.snapshot_id,
                "snapshot_at": None if m.snapshot_at is None else _iso(m.snapshot_at),
                "fallback_mirrors": list(m.fallback_mirrors),
                "new_mirrors": list(m.new_mirrors),
                "size_bytes": m.size_bytes,
            }
            for m in plan.moves
        ],
        "provisions": [
            {
                "server_id": p.server_id,
                "dc": p.dc,
                "template": p.template,
                "mirrors": list(p.mirrors),
            }
            for p in plan.provisions
        ],
        "refusals": [{"client_id": r.client_id, "reason": r.reason} for r in plan.refusals],
    }


def digest(data: Mapping[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _plan_id(mode: str, scope: Scope, target: Target, plan: Plan) -> str:
    return digest(_content(mode, scope, target, plan))[:PLAN_ID_LEN]


class _Reader:
    """Typed access to untrusted JSON, each error naming the path (``plan.moves[2].to_server``)."""

    def __init__(self, data: object, path: str) -> None:
        self.data = data
        self.path = path

    def _fail(self, key: str, message: str) -> PlanError:
        return PlanError(f"{self.path}.{key}: {message}")

    def raw(self, key: str) -> object:
        if not isinstance(self.data, dict):
            raise PlanError(f"{self.path}: must be an object")
        if key not in self.data:
            raise self._fail(key, "is missing")
        return self.data[key]

    def only(self, *keys: str) -> None:
        if not isinstance(self.data, dict):
            raise PlanError(f"{self.path}: must be an object")
        extra = sorted(set(self.data) - set(keys))
        if extra:
            raise PlanError(f"{self.path}: unknown field(s) {', '.join(map(repr, extra))}")

    def text(
        self, key: str, *, max_len: int = 10_000, pattern: re.Pattern[str] | None = None
    ) -> str:
        value = self.raw(key)
        if not isinstance(value, str) or not value or len(value) > max_len:
            raise self._fail(key, f"must be a non-empty string of at most {max_len} characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise self._fail(key, f"{shown(value)} is malformed")
        return value

    def ident(self, key: str) -> str:
        value = self.raw(key)
        if not is_valid_id(value):
            raise self._fail(key, f"{shown(value)} refused: not an id")
        return str(value)

    def opt_ident(self, key: str) -> str | None:
        return None if self.raw(key) is None else self.ident(key)

    def idents(self, key: str) -> tuple[str, ...]:
        return tuple(r.ident_value() for r in self.items(key))

    def ident_value(self) -> str:
        if not is_valid_id(self.data):
            raise PlanError(f"{self.path}: {self.data!r} refused: not an id")
        return str(self.data)

    def count(self, key: str) -> int:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail(key, f"must be a non-negative integer, got {value!r}")
        return value

    def opt_when(self, key: str) -> datetime | None:
        return None if self.raw(key) is None else self.when(key)

    def when(self, key: str) -> datetime:
        value = self.raw(key)
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise self._fail(key, f"must be an ISO 8601 time with a UTC offset, got {value!r}")
        return parsed.astimezone(UTC)

    def items(self, key: str) -> list[_Reader]:
        value = self.raw(key)
        if not isinstance(value, list):
            raise self._fail(key, "must be a list")
        return [_Reader(v, f"{self.path}.{key}[{i}]") for i, v in enumerate(value)]

    def child(self, key: str) -> _Reader:
        return _Reader(self.raw(key), f"{self.path}.{key}")


def _plan_from_data(r: _Reader) -> Plan:
    r.only(
        "format", "version", "plan_id", "created_at", "mode", "scope", "target",
        "moves", "provisions", "refusals",
    )  # fmt: skip
    if r.raw("format") != PLAN_FORMAT or r.raw("version") != PLAN_VERSION:
        raise PlanError(f"not a failover plan ({PLAN_FORMAT} version {PLAN_VERSION})")
    mode = r.text("mode")
    if mode not in MODES:
        raise PlanError(f"plan.mode: {mode!r} unknown: use one of {', '.join(MODES)}")
    s = r.child("scope")
    s.only("clients", "server", "dc")
    scope = Scope(s.idents("clients"), s.opt_ident("server"), s.opt_ident("dc"))
    if sum([bool(scope.clients), scope.server is not None, scope.dc is not None]) != 1:
        raise PlanError("plan.scope: names exactly one of clients, server, dc")
    t = r.child("target")
    t.only("server", "dc", "country")
    country = t.raw("country")
    target = Target(t.opt_ident("server"), t.opt_ident("dc"), None)
    if country is not None:
        target = Target(target.server, target.dc, t.text("country", pattern=COUNTRY_RE))
    if sum(v is not None for v in (target.server, target.dc, target.country)) > 1:
        raise PlanError("plan.target: names at most one of server, dc, country")
    moves = []
    for m in r.items("moves"):
        m.only(
            "client_id", "from_server", "to_server", "source_mirror", "snapshot_id",
            "snapshot_at", "fallback_mirrors", "new_mirrors", "size_bytes",
        )  # fmt: skip
        snapshot_id = (
            None
            if m.raw("snapshot_id") is None
            else m.text("snapshot_id", max_len=SNAPSHOT_ID_MAX_LEN, pattern=SNAPSHOT_ID_TEXT)
        )
        moves.append(
            ClientMove(
                client_id=m.ident("client_id"),
                from_server=m.ident("from_server"),
                to_server=m.ident("to_server"),
                source_mirror=m.opt_ident("source_mirror"),
                snapshot_id=snapshot_id,
                snapshot_at=m.opt_when("snapshot_at"),
                fallback_mirrors=m.idents("fallback_mirrors"),
                new_mirrors=m.idents("new_mirrors"),
                size_bytes=m.count("size_bytes"),
            )
        )
    provisions = []
    for p in r.items("provisions"):
        p.only("server_id", "dc", "template", "mirrors")
        provisions.append(
            ProvisionRequest(
                p.ident("server_id"), p.ident("dc"), p.ident("template"), p.idents("mirrors")
            )
        )
    refusals = []
    for f in r.items("refusals"):
        f.only("client_id", "reason")
        refusals.append(Refusal(f.ident("client_id"), f.text("reason", max_len=100_000)))
    moved = [m.client_id for m in moves]
    refused = [f.client_id for f in refusals]
    twice = sorted({c for c in moved + refused if (moved + refused).count(c) > 1})
    if twice:
        raise PlanError(f"plan: client(s) {', '.join(twice)} appear more than once")
    plan_id = r.text("plan_id", max_len=64, pattern=re.compile(r"[0-9a-f]{12,64}"))
    return Plan(
        plan_id=plan_id,
        mode=cast(Mode, mode),  # checked against MODES above
        scope=scope,
        target=target,
        created_at=r.when("created_at"),
        moves=tuple(moves),
        provisions=tuple(provisions),
        refusals=tuple(refusals),
    )


# --------------------------------------------------------------------------- rendering


def human_size(n: int) -> str:
    """Decimal units, like disk_gb: 1.5 GB is 1.5e9 bytes."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _age(then: datetime, now: datetime) -> str:
    seconds = max(int((now - then).total_seconds()), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172_800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    rows = [list(r) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    return [
        "  " + "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(header), *rows]
    ]


def render_plan(plan: Plan) -> str:
    n_new = len(plan.provisions)
    lines = [
        f"failover plan {plan.plan_id} ({plan.mode})",
        f"  scope:  {plan.scope.describe()}",
        f"  target: {plan.target.describe()}",
        f"  made:   {plan.created_at:%Y-%m-%d %H:%M:%S} UTC",
        f"  {len(plan.moves)} client(s) move, {n_new} new server(s), {len(plan.refusals)} refused",
    ]
    if plan.provisions:
        lines += ["", "provision:"]
        lines += _table(
            ["server", "dc", "template", "mirrors"],
            [[p.server_id, p.dc, p.template, ", ".join(p.mirrors) or "-"] for p in plan.provisions],
        )
    if plan.moves:
        lines += ["", "moves:"]
        rows = []
        for m in plan.moves:
            if m.snapshot_at is not None:
                snapshot = (
                    f"{m.snapshot_at:%Y-%m-%d %H:%M} ({_age(m.snapshot_at, plan.created_at)} old)"
                )
            else:
                snapshot = "final sync"
            mirrors = ", ".join(m.new_mirrors)
            if len(m.new_mirrors) < 2:
                mirrors += " (degraded: no off-site mirror)" if m.new_mirrors else "-"
            rows.append(
                [
                    m.client_id,
                    m.from_server,
                    m.to_server,
                    m.source_mirror or "-",
                    ", ".join(m.fallback_mirrors) or "-",
                    snapshot,
                    human_size(m.size_bytes),
                    mirrors,
                ]
            )
        lines += _table(
            ["client", "from", "to", "restore from", "fallback", "snapshot", "size", "new mirrors"],
            rows,
        )
    if plan.refusals:
        lines += ["", "refused (escalate):"]
        lines += [f"  {r.client_id}: {r.reason}" for r in plan.refusals]
    if not plan.moves and not plan.refusals:
        lines += ["", f"nothing to move: {plan.scope.describe()} has no clients"]
    return "\n".join(lines)
