"""Input checks of the store's methods: bad input raises PermanentError before a
transaction starts, so a refused call changes nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ppo_dr.errors import PermanentError


def now() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


def utc(value: datetime | None, what: str = "time") -> datetime:
    """*value* (default now) in UTC; a naive datetime is refused."""
    if value is None:
        return now()
    if not isinstance(value, datetime):
        raise PermanentError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise PermanentError(
            f"{what} {value.isoformat()} has no time zone: pass an aware datetime (UTC)"
        )
    return value.astimezone(UTC)


def check_text(value: object, what: str, max_len: int, *, empty_ok: bool = False) -> str:
    """*value* if it is a str of at most *max_len* characters (and non-empty unless allowed)."""
    if not isinstance(value, str):
        raise PermanentError(f"{what} must be a string, got {type(value).__name__}")
    if not value and not empty_ok:
        raise PermanentError(f"{what} must not be empty")
    if len(value) > max_len:
        raise PermanentError(f"{what} is {len(value)} characters long, at most {max_len} allowed")
    if "\x00" in value:
        raise PermanentError(f"{what} must not contain a NUL byte")
    return value


def check_run_id(value: str | None) -> str | None:
    """A flow run id (or None)."""
    return None if value is None else check_text(value, "flow run id", 100)


def check_count(value: object, what: str) -> int:
    """A non-negative int (bool is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PermanentError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def check_incident_id(value: object) -> int:
    """A positive int incident id (bool is not an id)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PermanentError(f"incident id must be a positive integer, got {value!r}")
    return value


def check_json(value: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """A plain JSON object copied from *value* (so later changes by the caller don't leak in)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PermanentError(f"{what} must be a mapping, got {type(value).__name__}")
    try:
        copied = json.loads(json.dumps(dict(value)))
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"{what} is not JSON-serialisable: {exc}") from None
    assert isinstance(copied, dict)
    return copied
