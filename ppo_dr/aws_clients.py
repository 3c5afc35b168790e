"""What every boto3 client of ours shares, whichever service it talks to (S3 for the
mirrors, EC2 and Route53 for the AWS provider): its ``Config`` (timeouts, botocore's
standard retries) and the translation into the ppo-dr error tree of the failures that
are not a service's answer (no credentials, the network, botocore itself).

A service's answer (``ClientError``) means something per service, so each caller maps
its codes itself, from :func:`error_code`. botocore is imported inside the functions:
the provider's callers should not pay for it until a DC on AWS is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ppo_dr.errors import AuthError, DRError, PermanentError, TransientError

if TYPE_CHECKING:
    from botocore.config import Config
    from botocore.exceptions import ClientError


def client_config(
    region: str | None, connect_timeout: float, read_timeout: float, max_attempts: int, **extra: Any
) -> Config:
    """A client ``Config`` with our time-outs and *max_attempts* in all (first included)."""
    from botocore.config import Config

    return Config(
        region_name=region,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max(1, max_attempts)},
        **extra,
    )


def error_code(exc: ClientError) -> tuple[str, int]:
    """The AWS error code and the HTTP status of a service's refusal ("" and 0 if absent)."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def translate_client_failure(exc: BaseException, label: str) -> DRError | None:
    """The ppo-dr error for a failure on our side of the wire, or None if *exc* is none
    of these (a service's answer, or a bug). *label* says what was being done."""
    from botocore.exceptions import (
        BotoCoreError,
        HTTPClientError,
        IncompleteReadError,
        NoCredentialsError,
        PartialCredentialsError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AuthError(f"{label}: no usable credentials ({type(exc).__name__})")
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        # Refused, unreachable, TLS, connect/read timeouts, a connection dropped
        # mid-body: the network or the endpoint, worth another try.
        return TransientError(f"{label}: network error ({type(exc).__name__})")
    if isinstance(exc, BotoCoreError):
        return PermanentError(f"{label}: {type(exc).__name__}")
    if isinstance(exc, TimeoutError | ConnectionError):
        return TransientError(f"{label}: network error ({type(exc).__name__})")
    return None


def chain_for(exc: BaseException, err: DRError) -> BaseException | None:
    """What to chain a translated error to: not an auth failure, whose botocore
    response can hold the access key id (a traceback must not print it)."""
    return None if isinstance(err, AuthError) else exc
