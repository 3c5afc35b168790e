"""What every channel shares: the message, the receipt, the Protocol and the typed errors.

A channel's ``send()`` either returns a :class:`Receipt` (the provider accepted the
message and gave it an id) or raises one of two errors, so a retry policy can tell a
429 from a 401 without knowing the vendor:

    ChannelTransientError (TransientError)   5xx, 429/throttling, timeouts, resets:
                                             retry with back-off; ``retry_after`` when
                                             the provider said how long to wait
    ChannelPermanentError (PermanentError)   4xx auth/validation, bad configuration,
                                             a message the channel cannot carry: do not
                                             retry, fall back to the person's other channel

Error messages name the provider, the status and a short reason, never a secret and
never a full request or response body (the body is what people were told; the store
keeps it, logs do not).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final, Literal, Protocol, runtime_checkable

from ppo_dr.errors import PermanentError, TransientError
from ppo_dr.secret_refs import REDACTOR

_log = logging.getLogger(__name__)

MessageChannel = Literal["email", "sms", "x"]
MESSAGE_CHANNELS: Final[tuple[MessageChannel, ...]] = ("email", "sms", "x")

#: Longest provider detail quoted in an error (a reason phrase, an error code).
_DETAIL_LEN: Final = 120


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message to one recipient on one channel, named by its idempotency key.

    ``recipient`` is an e-mail address, an E.164 phone number, or for X the account
    (informational: a post is public). The body stays out of ``repr`` so a traceback
    or a log of the message never carries what people were told.
    """

    key: str
    channel: MessageChannel
    recipient: str
    subject: str
    body: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Receipt:
    """The provider's id for an accepted message: what proves it left us."""

    provider: str
    message_id: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.message_id}"


@runtime_checkable
class Channel(Protocol):
    """A way to reach people. ``send()`` is the only method that does I/O."""

    #: The provider, as it appears in receipts and errors: sendgrid, sns, x, outbox.
    name: ClassVar[str]

    def send(self, message: OutboundMessage) -> Receipt:
        """Hand *message* to the provider; raise a channel error if it was not accepted."""
        ...


class ChannelTransientError(TransientError):
    """The provider may accept the same message later (5xx, throttling, timeout)."""

    def __init__(
        self,
        provider: str,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        code = f" {status}" if status is not None else ""
        # Masked again here: a provider's reason could quote a key id back at us.
        super().__init__(REDACTOR.redact(f"{provider}{code}: {reason}{wait}"))


class ChannelPermanentError(PermanentError):
    """The provider will refuse this message again (auth, validation, configuration)."""

    def __init__(self, provider: str, reason: str, *, status: int | None = None) -> None:
        self.provider = provider
        self.status = status
        code = f" {status}" if status is not None else ""
        super().__init__(REDACTOR.redact(f"{provider}{code}: {reason}"))


@dataclass(frozen=True, slots=True)
class StatusRule:
    """How one HTTP status of one provider is read: retry or not, and what it means."""

    transient: bool
    reason: str


#: Statuses every HTTP provider shares; each channel extends this with its own.
COMMON_STATUS_TABLE: Final[Mapping[int, StatusRule]] = {
    400: StatusRule(False, "bad request (the message or its fields were refused)"),
    401: StatusRule(False, "unauthorised (check the API credentials)"),
    403: StatusRule(False, "forbidden (the credentials lack permission)"),
    404: StatusRule(False, "not found (wrong API host or path)"),
    408: StatusRule(True, "request timeout"),
    413: StatusRule(False, "payload too large"),
    429: StatusRule(True, "rate limited"),
    500: StatusRule(True, "provider error"),
    502: StatusRule(True, "bad gateway"),
    503: StatusRule(True, "service unavailable"),
    504: StatusRule(True, "gateway timeout"),
}


def refusals(reasons: Mapping[int, str]) -> Mapping[int, StatusRule]:
    """The common table, with a provider's own words for the statuses it refuses."""
    return {**COMMON_STATUS_TABLE, **{s: StatusRule(False, r) for s, r in reasons.items()}}


class HttpStatusMapping:
    """Mixin: turn a provider's HTTP status into the right typed error through a table.

    Unlisted statuses fall back by class: 5xx transient, anything else permanent, so
    a new 4xx never loops in retries.
    """

    name: ClassVar[str]
    status_table: ClassVar[Mapping[int, StatusRule]] = COMMON_STATUS_TABLE

    @classmethod
    def error_for_status(
        cls, status: int, *, detail: str | None = None, retry_after: float | None = None
    ) -> ChannelTransientError | ChannelPermanentError:
        """The error for *status*; *detail* is a short provider reason, clipped, never a body."""
        rule = cls.status_table.get(status) or StatusRule(
            status >= 500, "provider error" if status >= 500 else "refused"
        )
        reason = rule.reason if not detail else f"{rule.reason}: {clip(detail)}"
        if rule.transient:
            return ChannelTransientError(cls.name, reason, status=status, retry_after=retry_after)
        return ChannelPermanentError(cls.name, reason, status=status)


class ProviderChannel(HttpStatusMapping, ABC):
    """One vendor's adapter: what every provider's ``send()`` does around its one call.

    ``send()`` refuses a message of another kind before any I/O, hands the message to
    :meth:`publish` (the vendor call, and the only I/O) and turns the provider's id into
    the receipt, logged by idempotency key, never by body.
    """

    #: The kind of message this provider carries.
    carries: ClassVar[MessageChannel]

    def send(self, message: OutboundMessage) -> Receipt:
        """Hand *message* to the provider; raise a channel error if it was not accepted."""
        if message.channel != self.carries:
            raise ChannelPermanentError(self.name, f"cannot carry a {message.channel} message")
        # Accepted without an id: record that rather than invent one.
        message_id = self.publish(message) or "accepted-without-id"
        _log.info("%s accepted %s as %s", self.name, message.key, message_id)
        return Receipt(self.name, message_id)

    @abstractmethod
    def publish(self, message: OutboundMessage) -> str | None:
        """Make the vendor call for *message*; the provider's id for it, if it gave one."""


def clip(text: str, limit: int = _DETAIL_LEN) -> str:
    """One line of at most *limit* characters: enough to diagnose, too short to be a body."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form); None if absent or a date."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0)
