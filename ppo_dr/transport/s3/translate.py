"""botocore and S3 failures translated into the ppo-dr error tree, in one place."""

from __future__ import annotations

from botocore.exceptions import ClientError, ParamValidationError

from ppo_dr.aws_clients import error_code, translate_client_failure
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
    label = f"{where}: {what}"
    if isinstance(exc, ClientError):
        return _refusal(label, *error_code(exc))
    if isinstance(exc, ParamValidationError):
        return PermanentError(f"{label}: invalid request ({exc})")
    return translate_client_failure(exc, label)


def _refusal(label: str, code: str, status: int) -> DRError:
    """What S3 (or a store speaking its API) meant by answering *code* / *status*."""
    if code == "NoSuchBucket":
        return RemotePathError(f"{label}: no such bucket")
    if code in NOT_FOUND_CODES:
        return RemotePathError(f"{label}: no such file or directory")
    if code in _AUTH:
        return AuthError(f"{label}: credentials refused or not permitted ({code})")
    if code in _EXISTS:
        return RemotePathError(f"{label}: file exists (conditional write lost)")
    if code in {"InvalidRange", "416"}:
        return RemotePathError(f"{label}: range not satisfiable")
    if code in _TRANSIENT or status >= 500 or status == 429:
        return TransientError(f"{label}: server busy or failing ({code or status})")
    if 400 <= status < 500:
        return PermanentError(f"{label}: refused by the server ({code or status})")
    return TransientError(f"{label}: unexpected answer ({code or status})")
