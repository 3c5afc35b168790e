"""Public status posts on X, with ``tweepy.Client.create_tweet`` (API v2, OAuth 1.0a user).

X answers 201 with ``data.id`` (the receipt). It refuses a text identical to a recent
post with 403 "duplicate content" (so status updates should carry a time), throttles
with 429 and ``x-rate-limit-reset`` (epoch seconds). Texts over 280 *weighted*
characters are refused here, before any I/O: X counts most CJK and emoji as two and
every URL as 23.

tweepy calls ``requests`` without a timeout, so the client's session is replaced by
one that always passes ours, and sends to ``api_url`` instead of X's host when one is
set (a stand-in or a proxy; tweepy has no host setting). The ``adapter`` argument
mounts a requests transport on the API host: the seam tests use to intercept the HTTP
layer (as httpx's ``MockTransport`` is), never needed in production.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final

import requests
import tweepy
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from requests.adapters import BaseAdapter

from ppo_dr.channels.base import (
    ChannelPermanentError,
    ChannelTransientError,
    OutboundMessage,
    ProviderChannel,
    refusals,
)
from ppo_dr.secret_refs import REDACTOR

X_MAX_WEIGHTED: Final = 280
#: Hosts tweepy talks to; an adapter given for tests is mounted on each.
X_API_HOSTS: Final = ("https://api.twitter.com", "https://api.x.com")
_URL: Final = re.compile(r"https?://\S+")
_URL_WEIGHT: Final = 23
#: twitter-text v3: code points in these ranges weigh 1, all others 2.
_LIGHT_RANGES: Final = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))


def x_length(text: str) -> int:
    """Length of *text* as X counts it (weighted code points, URLs as 23)."""
    total = 0
    for piece in _URL.split(text):
        for char in piece:
            code = ord(char)
            total += 1 if any(lo <= code <= hi for lo, hi in _LIGHT_RANGES) else 2
    return total + _URL_WEIGHT * len(_URL.findall(text))


#: How this provider's HTTP statuses read (the common table, in its own words).
X_STATUSES: Final = refusals(
    {
        400: "post refused",
        401: "credentials refused",
        403: "forbidden (app lacks write access, or duplicate text)",
    }
)


class XSettings(BaseModel):
    """OAuth 1.0a user-context credentials of the status account; all SecretStr."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    consumer_key: SecretStr
    consumer_secret: SecretStr
    access_token: SecretStr
    access_token_secret: SecretStr
    timeout: float = Field(default=10.0, gt=0, le=120)
    #: Where X's API is, when not at its public host (a stand-in or a proxy).
    api_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+")


class _TimeoutSession(requests.Session):
    """A session that applies our timeout to every request tweepy makes without one,
    and sends what tweepy addresses to X's hosts to *api_url* when one is given."""

    def __init__(self, timeout: float, api_url: str | None = None) -> None:
        super().__init__()
        self.default_timeout = timeout
        self.api_url = api_url.rstrip("/") if api_url else None

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.default_timeout)
        if self.api_url:
            for host in X_API_HOSTS:
                if str(url).startswith(host + "/"):
                    url = self.api_url + str(url)[len(host) :]
        return super().request(method, url, *args, **kwargs)


class XStatus(ProviderChannel):
    """Posts the public status text; the tweepy client is built once, here."""

    name = "x"
    carries = "x"
    status_table = X_STATUSES

    def __init__(self, settings: XSettings, *, adapter: BaseAdapter | None = None) -> None:
        values = {
            name: getattr(settings, name).get_secret_value()
            for name in ("consumer_key", "consumer_secret", "access_token", "access_token_secret")
        }
        for name, value in values.items():
            if not value.strip():
                raise ChannelPermanentError(self.name, f"{name} is empty")
            REDACTOR.protect(value)
        self.settings = settings
        self._client = tweepy.Client(**values)
        session = _TimeoutSession(settings.timeout, settings.api_url)
        if adapter is not None:
            for host in X_API_HOSTS:
                session.mount(host, adapter)
        self._client.session = session
        REDACTOR.install()

    def __repr__(self) -> str:
        return f"XStatus(api={self.settings.api_url or 'x'!r})"

    def publish(self, message: OutboundMessage) -> str | None:
        """Post the body as a status; the new post's id is the receipt."""
        length = x_length(message.body)
        if not message.body.strip():
            raise ChannelPermanentError(self.name, "the status text is empty")
        if length > X_MAX_WEIGHTED:
            raise ChannelPermanentError(
                self.name, f"status is {length} characters as X counts them, at most 280"
            )
        try:
            response = self._client.create_tweet(text=message.body)
        except tweepy.TooManyRequests as exc:
            wait = None if exc.reset_time is None else max(exc.reset_time - time.time(), 0.0)
            raise ChannelTransientError(
                self.name, "rate limited", status=429, retry_after=wait
            ) from None
        except tweepy.HTTPException as exc:
            status = int(getattr(exc.response, "status_code", 0) or 0)
            detail = exc.api_messages[0] if exc.api_messages else None
            if status == 403 and detail and "duplicate" in detail.lower():
                raise ChannelPermanentError(
                    self.name, "duplicate text refused (status updates must differ)", status=403
                ) from None
            raise self.error_for_status(status or 500, detail=detail) from None
        except requests.Timeout as exc:
            raise ChannelTransientError(
                self.name, f"no answer within {self.settings.timeout:g} s ({type(exc).__name__})"
            ) from None
        except requests.ConnectionError as exc:
            raise ChannelTransientError(
                self.name, f"cannot connect ({type(exc).__name__})"
            ) from None
        except (requests.RequestException, tweepy.TweepyException, ValueError) as exc:
            raise ChannelTransientError(
                self.name, f"unexpected answer ({type(exc).__name__})"
            ) from None
        data = getattr(response, "data", None) or {}
        return str(data.get("id") or "") or None
