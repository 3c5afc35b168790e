"""The escalation's vocabulary: notice keys, the notices it asks for, the incident as
the decision sees it, and the decision itself (plain frozen dataclasses, pure).

Every notice has the key ``incident:<id>/step:<step>/to:<recipient>/via:<channel>``,
made only of the incident id, the step, the recipient and the channel -- never the
time of the decision -- so a retried or restarted flow produces the same keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from ppo_dr.inventory import Contact

NoticeChannel = Literal["sms", "email", "x"]
PUBLIC: Final = "public"
X_LIMIT: Final = 280
_KEY = re.compile(r"^incident:(\d+)/step:([^/]+)/to:(.+)/via:(sms|email|x)$")

#: Statuspage's words for the public updates, in the order an incident moves through them.
PUBLIC_STATES: Final = ("investigating", "identified", "monitoring", "resolved")


def notice_key(incident_id: int, step: str, recipient: str, channel: str) -> str:
    """The idempotency key of one notice (stable across retries and restarts)."""
    return f"incident:{incident_id}/step:{step}/to:{recipient}/via:{channel}"


@dataclass(frozen=True, slots=True)
class NoticeKey:
    incident_id: int
    step: str
    recipient: str
    channel: NoticeChannel


def parse_key(key: str) -> NoticeKey | None:
    """The parts of a key made by :func:`notice_key`, or None for anything else."""
    match = _KEY.match(key)
    if match is None:
        return None
    channel: NoticeChannel = match.group(4)  # type: ignore[assignment]
    return NoticeKey(int(match.group(1)), match.group(2), match.group(3), channel)


@dataclass(frozen=True, slots=True)
class NoticeIntent:
    """A notice the flow should record (under ``key``) and then send."""

    key: str
    step: str
    channel: NoticeChannel
    recipient: str  # a person id, a contact's e-mail address, or "public"
    subject: str
    body: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to send now, when to decide again (None: only an ack/resolve will change
    anything), and whether the escalation is over."""

    notices: list[NoticeIntent]
    next_wake: datetime | None
    done: bool


@dataclass(frozen=True, slots=True)
class IncidentView:
    """What the decision needs to know about an incident (from the store).

    ``title`` is internal wording for the people paged (it may name servers and
    clients); it never reaches the public posts. ``acknowledgements`` lists every
    acknowledgement time (re-acks after a re-trigger); ``acknowledged_at`` is
    included automatically. ``sent`` holds the keys of notices already recorded.
    """

    id: int
    opened_at: datetime
    title: str = "service outage"
    clients: tuple[str, ...] = ()
    contacts: tuple[Contact, ...] = ()
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledgements: tuple[datetime, ...] = ()
    recovered_at: datetime | None = None
    resolved_at: datetime | None = None
    sent: frozenset[str] = frozenset()

    @classmethod
    def from_record(
        cls,
        incident: Any,
        *,
        sent: Iterable[str] = (),
        contacts: Iterable[Contact] = (),
        acknowledgements: Iterable[datetime] = (),
    ) -> IncidentView:
        """A view of a store :class:`~ppo_dr.store.records.Incident` (clients from its scope)."""
        scope = incident.scope or {}
        return cls(
            id=incident.id,
            opened_at=incident.opened_at,
            title=incident.title,
            clients=tuple(scope.get("clients", ())),
            contacts=tuple(contacts),
            acknowledged_at=incident.acknowledged_at,
            acknowledged_by=incident.acknowledged_by,
            acknowledgements=tuple(acknowledgements),
            recovered_at=incident.recovered_at,
            resolved_at=incident.resolved_at,
            sent=frozenset(sent),
        )


def contacts_of(clients: Iterable[Any], affected: Iterable[str]) -> tuple[Contact, ...]:
    """The key contacts of the *affected* client ids, one per e-mail address."""
    wanted = set(affected)
    seen: dict[str, Contact] = {}
    for client in clients:
        if client.id in wanted:
            for contact in client.contacts:
                seen.setdefault(contact.email.lower(), contact)
    return tuple(seen[k] for k in sorted(seen))
