"""Secrets: resolve a :class:`~ppo_dr.inventory.SecretRef`, keep the value out of logs.

fleet.yaml holds references only (``{env: SENDGRID_API_KEY}`` or ``{block: sendgrid}``).
``env:`` is read here; ``block:`` needs Prefect, which this package never imports, so
the task layer passes a *resolver* (``lambda name: Secret.load(name).get()``). Values
come back as :class:`~pydantic.SecretStr`, whose ``str``/``repr`` is ``**********``.

Prefect does not mask secrets in its logs (PREFECT-NOTES), and the vendor libraries
log their wire traffic at DEBUG (python-http-client prints the ``Authorization``
header; requests-oauthlib and botocore print key ids). So every resolved value is
registered with :class:`SecretRedactor`, a logging filter installed on the vendor
loggers that replaces registered values with ``***`` and drops the DEBUG dumps that
carry whole message bodies.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Final

from pydantic import SecretStr

from ppo_dr.errors import DRError, PermanentError
from ppo_dr.inventory import SecretRef

#: Loads a Prefect Secret block by name; returns None (or raises LookupError) if missing.
SecretResolver = Callable[[str], str | SecretStr | None]

#: Shorter values are not redacted: "***"-ing every "1" would garble logs, and no
#: credential we use is that short.
_MIN_REDACTED_LEN: Final = 6
_MASK: Final = "***"

#: Logger name prefixes of the libraries our channels drive.
VENDOR_LOGGERS: Final = (
    "python_http_client",
    "sendgrid",
    "botocore",
    "boto3",
    "urllib3",
    "requests",
    "requests_oauthlib",
    "oauthlib",
    "tweepy",
)
#: Loggers whose DEBUG records are request/response dumps with whole message bodies.
_BODY_DUMPERS: Final = ("python_http_client.client", "tweepy.client", "botocore.endpoint")


def resolve_secret(ref: SecretRef, resolver: SecretResolver | None = None) -> SecretStr:
    """The value *ref* points at, registered for redaction.

    A missing or empty secret is a :class:`PermanentError` naming the reference (never
    a value): retrying will not make an unset variable appear.
    """
    where = ref.describe()
    if ref.env is not None:
        value: str | SecretStr | None = os.environ.get(ref.env)
    else:
        if resolver is None:
            raise PermanentError(
                f"secret {where}: no block resolver given (the Prefect task layer passes one)"
            )
        try:
            value = resolver(str(ref.block))
        except DRError:
            raise
        except LookupError:
            value = None
        except Exception as exc:
            # The resolver's own message may quote whatever it read; name only the type.
            raise PermanentError(
                f"secret {where} could not be loaded ({type(exc).__name__})"
            ) from None
    plain = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not plain:
        raise PermanentError(f"secret {where} is not set or empty")
    REDACTOR.protect(plain)
    return SecretStr(plain)


class SecretRedactor(logging.Filter):
    """Replaces registered secret values in log records; drops vendor body dumps.

    A logger's filters see only records created on that logger (not its children),
    so :meth:`install` attaches it to every existing logger under the vendor
    prefixes; it is called after the vendor modules are imported.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._installed: set[str] = set()

    def protect(self, value: str) -> None:
        """Redact *value* from now on, wherever a watched logger prints it."""
        if len(value) >= _MIN_REDACTED_LEN:
            with self._lock:
                self._secrets = self._secrets | {value}

    def install(self, prefixes: Iterable[str] = VENDOR_LOGGERS) -> None:
        """Attach to every logger named by or under *prefixes* (idempotent)."""
        prefixes = tuple(prefixes)
        names = [
            name for name in list(logging.root.manager.loggerDict) if name.split(".")[0] in prefixes
        ]
        with self._lock:
            for name in [*prefixes, *names]:
                if name not in self._installed:
                    logging.getLogger(name).addFilter(self)
                    self._installed.add(name)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG and record.name in _BODY_DUMPERS:
            return False
        secrets = self._secrets
        if not secrets:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is the logging module's problem, not ours
            return True
        redacted = text
        for secret in secrets:
            if secret in redacted:
                redacted = redacted.replace(secret, _MASK)
        if redacted != text:
            record.msg = redacted
            record.args = None
        return True

    def redact(self, text: str) -> str:
        """*text* with every registered secret masked (for our own messages)."""
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        return text


#: The one redactor of the process: secrets resolved anywhere are masked everywhere.
REDACTOR: Final = SecretRedactor()
