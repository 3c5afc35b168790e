"""Channels: how a notice reaches people (e-mail, SMS) and the public (X).

One module per provider, each a class with the :class:`Channel` shape (``name`` and
``send(message) -> Receipt``), its client built once in the constructor from a
pydantic settings model whose credentials are ``SecretStr``. Each derives from
:class:`~.base.ProviderChannel`, whose ``send`` does what every provider shares
(refuse another kind of message, log and return the receipt) around the vendor's
``publish``, the only I/O:

``email_sendgrid``  :class:`SendGridEmail`  SendGrid v3 mail/send (``sendgrid`` library)
``sms_sns``         :class:`SnsSms`         Amazon SNS Publish to a phone number (boto3)
``x_tweepy``        :class:`XStatus`        X posts, ``tweepy.Client.create_tweet``
``outbox``          :class:`Outbox`         a JSON-lines file (the lab's default)

Errors (see :mod:`.base`): :class:`ChannelTransientError` (retry with back-off,
``retry_after`` when given) and :class:`ChannelPermanentError` (fall back now), both
in the :mod:`ppo_dr.errors` tree, so the one task retry condition reads them.

Credentials are :class:`~ppo_dr.inventory.SecretRef` in fleet.yaml, resolved by
:func:`resolve_secret` (``env:`` here, ``block:`` through the resolver the Prefect task
layer passes). :func:`build_channels` turns ``fleet.channels`` into the channel for
each kind of message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from ppo_dr import config
from ppo_dr.channels.base import (
    MESSAGE_CHANNELS,
    Channel,
    ChannelPermanentError,
    ChannelTransientError,
    MessageChannel,
    OutboundMessage,
    Receipt,
)
from ppo_dr.channels.email_sendgrid import SendGridEmail, SendGridSettings
from ppo_dr.channels.outbox import Outbox, read_outbox
from ppo_dr.channels.sms_sns import SnsSettings, SnsSms
from ppo_dr.channels.x_tweepy import XSettings, XStatus, x_length
from ppo_dr.inventory import Fleet, SecretRef
from ppo_dr.secret_refs import REDACTOR, SecretResolver, resolve_secret


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the providers are, when not their public hosts (stand-ins, private links).

    ``channels.<kind>.endpoint_url`` in fleet.yaml wins over these."""

    sendgrid_host: str | None = None
    sns_endpoint_url: str | None = None
    x_api_url: str | None = None


def build_channels(
    fleet: Fleet,
    secret_resolver: SecretResolver | None = None,
    *,
    endpoints: Endpoints = Endpoints(),
) -> dict[MessageChannel, Channel]:
    """The channel for ``email``, ``sms`` and ``x`` as ``fleet.channels`` configures them.

    Secrets are resolved now, so a missing one fails the run at start-up (naming its
    reference) rather than at the first page. Outbox channels share one file:
    ``channels.outbox``, else ``outbox.jsonl`` in the state directory.
    """
    cfg = fleet.channels
    sendgrid_host = cfg.email.endpoint_url or endpoints.sendgrid_host
    x_api_url = cfg.x.endpoint_url or endpoints.x_api_url

    def required(ref: SecretRef | None, what: str) -> SecretStr:
        if ref is None:
            raise ChannelPermanentError("config", f"channels.{what} is not set")
        return resolve_secret(ref, secret_resolver)

    def optional(ref: SecretRef | None) -> SecretStr | None:
        return None if ref is None else resolve_secret(ref, secret_resolver)

    outbox: Outbox | None = None

    def the_outbox() -> Outbox:
        nonlocal outbox
        if outbox is None:
            outbox = Outbox(Path(cfg.outbox) if cfg.outbox else config.home() / "outbox.jsonl")
        return outbox

    def sendgrid() -> Channel:
        return SendGridEmail(
            SendGridSettings(
                api_key=required(cfg.email.api_key, "email.api_key"),
                sender=cfg.email.sender,
                **({"host": sendgrid_host} if sendgrid_host else {}),
            )
        )

    def sns() -> Channel:
        return SnsSms(
            SnsSettings(
                region=cfg.sms.region or "",
                access_key_id=optional(cfg.sms.access_key_id),
                secret_access_key=optional(cfg.sms.secret_access_key),
                endpoint_url=cfg.sms.endpoint_url or endpoints.sns_endpoint_url,
            )
        )

    def x_status() -> Channel:
        x = cfg.x
        return XStatus(
            XSettings(
                consumer_key=required(x.consumer_key, "x.consumer_key"),
                consumer_secret=required(x.consumer_secret, "x.consumer_secret"),
                access_token=required(x.access_token, "x.access_token"),
                access_token_secret=required(x.access_token_secret, "x.access_token_secret"),
                **({"api_url": x_api_url} if x_api_url else {}),
            )
        )

    vendors: dict[MessageChannel, Callable[[], Channel] | None] = {
        "email": sendgrid if cfg.email.provider == "sendgrid" else None,
        "sms": sns if cfg.sms.provider == "sns" else None,
        "x": x_status if cfg.x.provider == "x" else None,
    }
    return {kind: build() if build else the_outbox() for kind, build in vendors.items()}


def describe_channels(channels: Mapping[MessageChannel, Channel]) -> str:
    """``email=sendgrid sms=outbox x=outbox``: safe to log (names only)."""
    return " ".join(
        f"{kind}={channels[kind].name}" for kind in MESSAGE_CHANNELS if kind in channels
    )


__all__ = [
    "MESSAGE_CHANNELS",
    "REDACTOR",
    "Channel",
    "ChannelPermanentError",
    "ChannelTransientError",
    "Endpoints",
    "MessageChannel",
    "OutboundMessage",
    "Outbox",
    "Receipt",
    "SecretResolver",
    "SendGridEmail",
    "SendGridSettings",
    "SnsSettings",
    "SnsSms",
    "XSettings",
    "XStatus",
    "build_channels",
    "describe_channels",
    "read_outbox",
    "resolve_secret",
    "x_length",
]
