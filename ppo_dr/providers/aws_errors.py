"""boto3 and botocore failures of the AWS provider, translated at the boundary into
the ppo-dr error tree, so that retrying is decided by the error class alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ppo_dr.aws_clients import chain_for, error_code, translate_client_failure
from ppo_dr.errors import AuthError, DRError, PermanentError, TransientError

_AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "AccessDeniedException",
        "ExpiredToken",
        "InvalidToken",
        "OptInRequired",
        "Blocked",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "PriorRequestNotComplete",
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "ServiceUnavailable",
        "Unavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
    }
)


def translate(exc: BaseException, what: str) -> DRError | None:
    """The ppo-dr error for a boto3/botocore failure of *what*, or None (a bug).

    Error codes decide (EC2 throttles with 503 ``RequestLimitExceeded``, Route53 with
    400 ``Throttling``); the HTTP status is the fallback. Messages carry the code and
    the operation, never request parameters or credentials.
    """
    from botocore.exceptions import ClientError, NoRegionError, WaiterError

    if isinstance(exc, DRError):
        return exc
    if isinstance(exc, ClientError):
        return _refusal(what, *error_code(exc))
    if isinstance(exc, WaiterError):
        last = getattr(exc, "last_response", None) or {}
        reason = str(last.get("Error", {}).get("Code", ""))
        if "Max attempts exceeded" in str(exc):
            return TransientError(f"{what}: not done in time; try again")
        return PermanentError(f"{what}: failed ({reason or exc.kwargs.get('reason', 'waiter')})")
    if isinstance(exc, NoRegionError):
        return PermanentError(f"{what}: no AWS region")
    err = translate_client_failure(exc, what)
    if err is None and isinstance(exc, OSError):
        return TransientError(f"{what}: network error ({type(exc).__name__})")
    return err


def _refusal(what: str, code: str, status: int) -> DRError:
    """What EC2 or Route53 meant by answering *code* / *status*."""
    if code in _AUTH_CODES or status in (401, 403):
        return AuthError(f"{what}: AWS refused our credentials or permissions ({code})")
    if code in _TRANSIENT_CODES or status >= 500 or status == 429:
        return TransientError(f"{what}: AWS busy or failing ({code or status}); try again")
    if code == "IdempotentParameterMismatch":
        return PermanentError(
            f"{what}: the client token was used before with other arguments (was the "
            "DC's launch template changed since this server id was first launched?)"
        )
    if "LaunchTemplate" in code:
        return PermanentError(f"{what}: launch template not usable ({code})")
    return PermanentError(f"{what}: refused by AWS ({code or status})")


@contextmanager
def aws_call(what: str) -> Iterator[None]:
    """Translate boto3 failures; auth errors are not chained (their response may
    name the access key id, and a traceback must not print it)."""
    try:
        yield
    except Exception as exc:
        err = translate(exc, what)
        if err is None or err is exc:
            raise
        raise err from chain_for(exc, err)
