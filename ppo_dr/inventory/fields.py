"""The value types a fleet file holds (ids, durations, countries, paths, URLs, host
keys, secret references, AWS and S3 names), each validated with a named rule."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from ppo_dr.cron import cron_interval
from ppo_dr.errors import PermanentError
from ppo_dr.ids import ID_RULE, absolute_path_problem, is_valid_id, relative_path_problem

OUR_RULES: set[str] = set()
MIRROR_MAX_GAP = timedelta(hours=1)  # the operator's promise: hourly mirrors


def broken(rule: str, message: str) -> PydanticCustomError:
    """A validation error whose type is the rule's name, so the report can cite it."""
    OUR_RULES.add(rule)
    return PydanticCustomError(rule, "{detail}", {"detail": message})


def _must_match(pattern: str, rule: str, says: str) -> AfterValidator:
    """A field check: the whole value matches *pattern*, else *rule* is broken and the
    message is the value followed by *says*."""

    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise broken(rule, f"{value!r} {says}")
        return value

    return AfterValidator(check)


def _id(value: str) -> str:
    if not is_valid_id(value):
        raise broken(ID_RULE, f"{value!r} does not match {ID_RULE}")
    return value


def _duration(value: Any) -> int:
    """Seconds from an int or a string such as '90s', '3m', '1h', '1d'."""
    if isinstance(value, bool):
        raise broken("duration", "a duration is a number of seconds or a string like '3m'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value)
        if not match:
            raise broken("duration", f"{value!r} is not a duration like '90s', '3m', '1h' or '1d'")
        seconds = (
            int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        )
    else:
        raise broken("duration", "a duration is a number of seconds or a string like '3m'")
    if seconds <= 0:
        raise broken("duration", "a duration must be positive")
    return seconds


def _relative(value: str) -> str:
    problem = relative_path_problem(value)
    if problem is None and value.rstrip("/") == ".":
        problem = "must name a directory inside the data root, not the root itself"
    if problem:
        raise broken("relative path inside the data root", f"{value!r} {problem}")
    return value.rstrip("/")


def _absolute(value: str) -> str:
    problem = absolute_path_problem(value)
    if problem:
        raise broken("absolute path", f"{value!r} {problem}")
    return value.rstrip("/") or "/"


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.password:  # checked first: the message below would echo the password
        raise broken("http(s) URL", "a URL must not carry a password; use a secret reference")
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise broken("http(s) URL", f"{value!r} is not an http(s) URL")
    return value


def _host_key(value: str) -> str:
    fields = value.split()
    if len(fields) < 2 or not fields[0].startswith(("ssh-", "ecdsa-")):
        raise broken(
            "host key",
            "a host key is '<type> <base64>' as in known_hosts, e.g. 'ssh-ed25519 AAAA...'",
        )
    try:
        base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise broken("host key", "the host key's second field is not valid base64") from None
    return f"{fields[0]} {fields[1]}"


def _mirror_cron(value: str) -> str:
    """The hourly promise: a mirror schedule may run as often as wanted (5 minutes is
    the shortest measured, docs/repository.md; the lab runs every minute) but never
    leaves more than an hour between runs."""
    try:
        gap = cron_interval(value)
    except PermanentError as exc:
        raise broken("cron syntax", str(exc)) from None
    if gap > MIRROR_MAX_GAP:
        raise broken(
            "mirror at least hourly",
            f"{value!r} leaves up to {gap} between mirror runs; at most {MIRROR_MAX_GAP}",
        )
    return value


Id = Annotated[str, AfterValidator(_id)]
MirrorCron = Annotated[str, AfterValidator(_mirror_cron)]
Duration = Annotated[int, BeforeValidator(_duration)]
Country = Annotated[
    str,
    _must_match(
        r"[A-Z]{2}", "country code", "is not an ISO 3166 alpha-2 country code such as 'ZA'"
    ),
]
RelativePath = Annotated[str, AfterValidator(_relative)]
AbsolutePath = Annotated[str, AfterValidator(_absolute)]
HttpUrl = Annotated[str, AfterValidator(_url)]
HostKey = Annotated[str, AfterValidator(_host_key)]
Email = Annotated[
    str, _must_match(r"[^@\s]+@[^@\s]+\.[^@\s]+", "e-mail address", "is not an e-mail address")
]
Phone = Annotated[
    str,
    _must_match(
        r"\+[1-9]\d{6,14}",
        "E.164 phone number",
        "is not an E.164 phone number such as '+27821234567'",
    ),
]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]  # strict: `port: yes` is not 1
Channel = Literal["sms", "email", "x"]
# A DNS name or an IP address; never starting with "-", which ssh would read as an option.
HOST_PATTERN = r"^[A-Za-z0-9.:\[\]][A-Za-z0-9.:\-\[\]]*$"


class FrozenModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class SecretRef(FrozenModel):
    """Where a secret lives: an environment variable or a Prefect Secret block."""

    env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None
    block: Id | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.block is None):
            raise broken("secret reference", "names exactly one of 'env' or 'block'")
        return self

    def describe(self) -> str:
        """Where the secret comes from, safe to print (never the value)."""
        return f"env:{self.env}" if self.env else f"block:{self.block}"


def _not_a_literal_secret(value: Any) -> Any:
    if isinstance(value, str):  # never echo it: it may be the secret itself
        raise broken(
            "secrets are references",
            "write a reference such as {env: VAR} or {block: name}, never the secret itself",
        )
    return value


Secret = Annotated[SecretRef, BeforeValidator(_not_a_literal_secret)]


def _s3_bucket(value: str) -> str:
    # S3's naming rules; also keeps the name safe in a URL path (path-style endpoints).
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value) or ".." in value:
        raise broken(
            "S3 bucket name",
            f"{value!r} is not an S3 bucket name (3-63 of a-z 0-9 . -, starting and ending "
            "with a letter or digit)",
        )
    return value


def _s3_prefix(value: str) -> str:
    parts = value.strip("/").split("/") if value.strip("/") else []
    bad_part = any(p in {"", ".", ".."} for p in parts)
    if (
        value.startswith("/")
        or bad_part
        or not re.fullmatch(r"[A-Za-z0-9!_.*'()/ -]{0,512}", value)
    ):
        raise broken(
            "S3 prefix",
            f"{value!r} is not a key prefix such as 'ppo-dr/prod' (relative, no '.' or '..' "
            "parts, letters, digits and !_.*'()- /)",
        )
    return value.strip("/")


def _store_url(value: str) -> str:
    if re.search(r"://[^/@]*:[^/@]*@", value):
        raise broken(
            "secrets are references", "store.url must not carry a password; use store.url_secret"
        )
    return value


AwsRegion = Annotated[
    str,
    _must_match(
        r"[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d{1,2}",
        "AWS region",
        "is not an AWS region such as 'af-south-1'",
    ),
]
# An id (lt-0abc...) or a name, as EC2 spells them; "lt-" always means an id.
LaunchTemplate = Annotated[
    str,
    _must_match(
        r"lt-[0-9a-f]{8,17}|(?!lt-)[A-Za-z0-9().\-/_]{3,128}",
        "launch template",
        "is neither a launch template id (lt-0123abcd...) nor a template name",
    ),
]
HostedZone = Annotated[
    str,
    _must_match(
        r"[A-Z0-9]{1,32}",
        "hosted zone id",
        "is not a Route53 hosted zone id such as 'Z1D633PJN98FT9'",
    ),
]
S3Bucket = Annotated[str, AfterValidator(_s3_bucket)]
S3Prefix = Annotated[str, AfterValidator(_s3_prefix)]
StoreUrl = Annotated[str, AfterValidator(_store_url)]
