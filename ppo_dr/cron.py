"""Five-field cron expressions (minute hour day-of-month month day-of-week), pure.

Why our own: the fleet file's schedules are checked when it is loaded (a mirror
schedule must keep the hourly promise), and the mirror's staleness rule judges a
schedule by its longest quiet spell; both need the gaps between fire times, which
the schedulers' libraries do not give.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

from ppo_dr.errors import PermanentError

_REFERENCE: Final = date(2026, 1, 1)
_WEEKS: Final = 15  # minute/hour/weekday patterns repeat weekly: two weeks tell the gap
_YEARS: Final = 5  # day-of-month or month patterns: Feb 29 repeats within 4 years

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {name.lower(): (i + 1) % 7 for i, name in enumerate(calendar.day_abbr)}  # sun=0
# (name, low, high, names)
_FIELDS: Final[tuple[tuple[str, int, int, dict[str, int]], ...]] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


@dataclass(frozen=True)
class CronSpec:
    """A parsed five-field cron expression (minute hour day-of-month month day-of-week)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_month or in_week  # cron's rule: either one when both are given
        return in_month and in_week


def _value(text: str, low: int, high: int, names: dict[str, int], what: str) -> int:
    token = text.lower()
    if token in names:
        return names[token]
    if not token.isdigit():
        raise PermanentError(f"cron {what} {text!r} is not a number")
    number = int(token)
    if not low <= number <= high:
        raise PermanentError(f"cron {what} {number} is outside {low}-{high}")
    return number


def _field(text: str, low: int, high: int, names: dict[str, int], what: str) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise PermanentError(f"cron {what} step {step_text!r} is not a positive number")
            step = int(step_text)
        if base in {"*", "?"}:
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _value(first, low, high, names, what)
            end = _value(last, low, high, names, what)
            if end < start:
                raise PermanentError(f"cron {what} range {base!r} runs backwards")
        else:
            start = _value(base, low, high, names, what)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return values


def parse_cron(expression: str) -> CronSpec:
    """Parse a five-field cron expression; PermanentError says what is wrong."""
    parts = expression.split()
    if len(parts) != 5:
        raise PermanentError(f"cron {expression!r} must have 5 fields, has {len(parts)}")
    sets = [
        _field(text, low, high, names, what)
        for text, (what, low, high, names) in zip(parts, _FIELDS, strict=True)
    ]
    weekdays = {d % 7 for d in sets[4]}
    return CronSpec(
        minutes=frozenset(sets[0]),
        hours=frozenset(sets[1]),
        days=frozenset(sets[2]),
        months=frozenset(sets[3]),
        weekdays=frozenset(weekdays),
        days_restricted=not parts[2].startswith(("*", "?")),
        weekdays_restricted=not parts[4].startswith(("*", "?")),
    )


def _fires(spec: CronSpec, days: int) -> Iterator[int]:
    """Fire times as minutes since the reference date, over *days* days."""
    minutes = sorted(spec.minutes)
    hours = sorted(spec.hours)
    for offset in range(days):
        if spec.day_matches(_REFERENCE + timedelta(days=offset)):
            for hour in hours:
                for minute in minutes:
                    yield offset * 1440 + hour * 60 + minute


def cron_interval(expression: str) -> timedelta:
    """The longest gap between consecutive fire times of *expression*.

    ``0 * * * *`` → 1 h, ``* * * * *`` → 1 min, ``0 9 * * 1-5`` → 3 days (Friday to
    Monday). PermanentError for an expression that does not parse or fires less than
    twice in five years.
    """
    spec = parse_cron(expression)
    weekly = not spec.days_restricted and spec.months == frozenset(range(1, 13))
    daily = weekly and not spec.weekdays_restricted  # every day alike: two days tell it
    span = 2 if daily else _WEEKS * 7 if weekly else _YEARS * 366
    previous: int | None = None
    longest = 0
    for fire in _fires(spec, span):
        if previous is not None:
            longest = max(longest, fire - previous)
        previous = fire
    if longest == 0:
        raise PermanentError(f"cron {expression!r} does not fire regularly enough to mirror by")
    return timedelta(minutes=longest)
