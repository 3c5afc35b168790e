"""botocore and S3 failures translated into the ppo-dr error tree, in one place."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ppo_dr.errors import AuthError, DRError, PermanentError, RemotePathError, TransientError

NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchUpload"})
_AUTH = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidSecurity",
    }
)
_EXISTS = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
_TRANSIENT = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeTooSkewed",  # the clock is off: fixed by NTP, not by us; try later
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
        "OperationAborted",
    }
)


def translate_error(exc: BaseException, where: str, what: str) -> DRError | None:
    """The ppo-dr error for a botocore failure, or None if it is not one (a bug).

    AWS error codes decide first (throttling is a 503 ``SlowDown`` on S3 but other
    stores send 400 ``Throttling``); the HTTP status is the fallback. A HEAD has no
    body, so its errors arrive as a bare status code ("404", "403").
    """
    if isinstance(exc, DRError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            return RemotePathError(f"{where}: {what}: no such bucket")
        if code in NOT_FOUND_CODES:
            return RemotePathError(f"{where}: {what}: no such file or directory")
        if code in _AUTH:
            return AuthError(f"{where}: {what}: credentials refused or not permitted ({code})")
        if code in _EXISTS:
            return RemotePathError(f"{where}: {what}: file exists (conditional write lost)")
        if code in {"InvalidRange", "416"}:
            return RemotePathError(f"{where}: {what}: range not satisfiable")
        if code in _TRANSIENT or status >= 500 or status == 429:
            return TransientError(f"{where}: {what}: server busy or failing ({code or status})")
        if 400 <= status < 500:
            return PermanentError(f"{where}: {what}: refused by the server ({code or status})")
        return TransientError(f"{where}: {what}: unexpected answer ({code or status})")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AuthError(f"{where}: {what}: no usable credentials ({type(exc).__name__})")
    if isinstance(exc, ParamValidationError):
        return PermanentError(f"{where}: {what}: invalid request ({exc})")
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        # Refused, unreachable, TLS, connect/read timeouts, a connection dropped
        # mid-body: the network or the endpoint, worth another try.
        return TransientError(f"{where}: {what}: network error ({type(exc).__name__})")
    if isinstance(exc, BotoCoreError):
        return PermanentError(f"{where}: {what}: {type(exc).__name__}")
    if isinstance(exc, TimeoutError | ConnectionError):
        return TransientError(f"{where}: {what}: network error ({type(exc).__name__})")
    return None


def chain_for(exc: BaseException, err: DRError) -> BaseException | None:
    """What to chain a translated error to: not an auth failure, whose botocore
    response can hold the access key id (a traceback must not print it)."""
    return None if isinstance(err, AuthError) else exc
