"""The fleet inventory: ``fleet.yaml`` as a typed model, and the rules it must keep.

Loading never stops at the first problem: every item is validated on its own and the
topology rules run over whatever parsed, so an operator fixes a file in one pass.
Each :class:`~ppo_dr.errors.Violation` names the file, the line, the path inside the
file (``servers[app-jhb1-1].ssh.port``) and the rule it breaks.

Secrets never appear in the file, only :class:`SecretRef` references (an environment
variable or a Prefect Secret block name), which the runbooks resolve at send time.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ppo_dr.errors import InventoryError, Violation
from ppo_dr.ids import ID_RULE, absolute_path_problem, is_valid_id, relative_path_problem

# --------------------------------------------------------------------------- field types


_OUR_RULES: set[str] = set()


def _broken(rule: str, message: str) -> PydanticCustomError:
    """A validation error whose type is the rule's name, so the report can cite it."""
    _OUR_RULES.add(rule)
    return PydanticCustomError(rule, "{detail}", {"detail": message})


def _id(value: str) -> str:
    if not is_valid_id(value):
        raise _broken(ID_RULE, f"{value!r} does not match {ID_RULE}")
    return value


def _duration(value: Any) -> int:
    """Seconds from an int or a string such as '90s', '3m', '1h', '1d'."""
    if isinstance(value, bool):
        raise _broken("duration", "a duration is a number of seconds or a string like '3m'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value)
        if not match:
            raise _broken("duration", f"{value!r} is not a duration like '90s', '3m', '1h' or '1d'")
        seconds = (
            int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        )
    else:
        raise _broken("duration", "a duration is a number of seconds or a string like '3m'")
    if seconds <= 0:
        raise _broken("duration", "a duration must be positive")
    return seconds


def _country(value: str) -> str:
    if not re.fullmatch(r"[A-Z]{2}", value):
        raise _broken(
            "country code", f"{value!r} is not an ISO 3166 alpha-2 country code such as 'ZA'"
        )
    return value


def _relative(value: str) -> str:
    problem = relative_path_problem(value)
    if problem is None and value.rstrip("/") == ".":
        problem = "must name a directory inside the data root, not the root itself"
    if problem:
        raise _broken("relative path inside the data root", f"{value!r} {problem}")
    return value.rstrip("/")


def _absolute(value: str) -> str:
    problem = absolute_path_problem(value)
    if problem:
        raise _broken("absolute path", f"{value!r} {problem}")
    return value.rstrip("/") or "/"


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.password:  # checked first: the message below would echo the password
        raise _broken("http(s) URL", "a URL must not carry a password; use a secret reference")
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise _broken("http(s) URL", f"{value!r} is not an http(s) URL")
    return value


def _host_key(value: str) -> str:
    fields = value.split()
    if len(fields) < 2 or not fields[0].startswith(("ssh-", "ecdsa-")):
        raise _broken(
            "host key",
            "a host key is '<type> <base64>' as in known_hosts, e.g. 'ssh-ed25519 AAAA...'",
        )
    try:
        base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise _broken("host key", "the host key's second field is not valid base64") from None
    return f"{fields[0]} {fields[1]}"


def _email(value: str) -> str:
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
        raise _broken("e-mail address", f"{value!r} is not an e-mail address")
    return value


def _phone(value: str) -> str:
    if not re.fullmatch(r"\+[1-9]\d{6,14}", value):
        raise _broken(
            "E.164 phone number", f"{value!r} is not an E.164 phone number such as '+27821234567'"
        )
    return value


Id = Annotated[str, AfterValidator(_id)]
Duration = Annotated[int, BeforeValidator(_duration)]
Country = Annotated[str, AfterValidator(_country)]
RelativePath = Annotated[str, AfterValidator(_relative)]
AbsolutePath = Annotated[str, AfterValidator(_absolute)]
HttpUrl = Annotated[str, AfterValidator(_url)]
HostKey = Annotated[str, AfterValidator(_host_key)]
Email = Annotated[str, AfterValidator(_email)]
Phone = Annotated[str, AfterValidator(_phone)]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]  # strict: `port: yes` is not 1
Channel = Literal["sms", "email", "x"]
# A DNS name or an IP address; never starting with "-", which ssh would read as an option.
_HOST = r"^[A-Za-z0-9.:\[\]][A-Za-z0-9.:\-\[\]]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# --------------------------------------------------------------------------- the model


class SecretRef(_Model):
    """Where a secret lives: an environment variable or a Prefect Secret block."""

    env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None
    block: Id | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.block is None):
            raise _broken("secret reference", "names exactly one of 'env' or 'block'")
        return self

    def describe(self) -> str:
        """Where the secret comes from, safe to print (never the value)."""
        return f"env:{self.env}" if self.env else f"block:{self.block}"


def _not_a_literal_secret(value: Any) -> Any:
    if isinstance(value, str):  # never echo it: it may be the secret itself
        raise _broken(
            "secrets are references",
            "write a reference such as {env: VAR} or {block: name}, never the secret itself",
        )
    return value


Secret = Annotated[SecretRef, BeforeValidator(_not_a_literal_secret)]


def _aws_region(value: str) -> str:
    if not re.fullmatch(r"[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d{1,2}", value):
        raise _broken("AWS region", f"{value!r} is not an AWS region such as 'af-south-1'")
    return value


def _launch_template(value: str) -> str:
    # An id (lt-0abc...) or a name, as EC2 spells them; "lt-" always means an id.
    if not re.fullmatch(r"lt-[0-9a-f]{8,17}|(?!lt-)[A-Za-z0-9().\-/_]{3,128}", value):
        raise _broken(
            "launch template",
            f"{value!r} is neither a launch template id (lt-0123abcd...) nor a template name",
        )
    return value


def _hosted_zone(value: str) -> str:
    if not re.fullmatch(r"[A-Z0-9]{1,32}", value):
        raise _broken(
            "hosted zone id", f"{value!r} is not a Route53 hosted zone id such as 'Z1D633PJN98FT9'"
        )
    return value


class DataCentre(_Model):
    """A data centre and how new servers appear in it.

    ``provider: aws`` DCs provision app servers from an EC2 launch template in
    ``region`` and route clients with Route53 records in ``hosted_zone_id`` (optional:
    without it routing is left to whatever reads the placements). Credentials are
    references (``access_key_id`` + ``secret_access_key``); without them boto3's
    standard chain (environment, instance role) is used. The aws-only fields are
    refused elsewhere, so a setting never silently does nothing.
    """

    id: Id
    name: str = ""
    country: Country
    provider: Literal["lab", "aws", "static"] = "static"
    region: Annotated[str, AfterValidator(_aws_region)] | None = None
    launch_template: Annotated[str, AfterValidator(_launch_template)] | None = None
    launch_template_version: str = Field(default="$Default", pattern=r"^(\$Default|\$Latest|\d+)$")
    hosted_zone_id: Annotated[str, AfterValidator(_hosted_zone)] | None = None
    dns_ttl: int = Field(default=60, ge=1, le=86400)
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None

    @model_validator(mode="after")
    def _aws_settings(self) -> DataCentre:
        aws_only = ("launch_template", "hosted_zone_id", "access_key_id", "secret_access_key")
        if self.provider != "aws":
            named = [name for name in aws_only if getattr(self, name) is not None]
            if named:
                raise _broken(
                    "aws settings need provider aws",
                    f"{', '.join(named)} only apply to provider aws (this one is {self.provider})",
                )
            return self
        missing = [name for name in ("region", "launch_template") if getattr(self, name) is None]
        if missing:
            raise _broken(
                "aws data centres name region and launch template",
                f"provider aws needs {' and '.join(missing)}",
            )
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise _broken(
                "secret reference", "name both access_key_id and secret_access_key, or neither"
            )
        return self


class SshEndpoint(_Model):
    host: str = Field(min_length=1, max_length=253, pattern=_HOST)
    port: Port = 22
    user: Id = "ppo"
    host_key: HostKey


def _s3_bucket(value: str) -> str:
    # S3's naming rules; also keeps the name safe in a URL path (path-style endpoints).
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value) or ".." in value:
        raise _broken(
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
        raise _broken(
            "S3 prefix",
            f"{value!r} is not a key prefix such as 'ppo-dr/prod' (relative, no '.' or '..' "
            "parts, letters, digits and !_.*'()- /)",
        )
    return value.strip("/")


class S3Location(_Model):
    """An off-site mirror in object storage: repositories live at
    ``s3://<bucket>/<prefix>/repos/<app-server-id>/``. ``endpoint_url`` is for an
    S3-compatible store (or a test server); credentials are references, and without
    them boto3's standard chain (environment, instance role) is used."""

    bucket: Annotated[str, AfterValidator(_s3_bucket)]
    prefix: Annotated[str, AfterValidator(_s3_prefix)] = ""
    region: Annotated[str, AfterValidator(_aws_region)]
    endpoint_url: HttpUrl | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None

    @model_validator(mode="after")
    def _both_keys(self) -> S3Location:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise _broken(
                "secret reference", "name both access_key_id and secret_access_key, or neither"
            )
        return self


class HttpEndpoint(_Model):
    host: str = Field(min_length=1, max_length=253, pattern=_HOST)
    port: Port = 80


class Capacity(_Model):
    clients: int = Field(ge=0, default=100)
    disk_gb: float = Field(ge=0, default=100.0)


class Server(_Model):
    id: Id
    dc: Id
    role: Literal["app", "mirror", "spare"]
    ssh: SshEndpoint | None = None  # required, except for a mirror in S3 (then ``s3``)
    s3: S3Location | None = None
    http: HttpEndpoint | None = None
    data_root: AbsolutePath = "/srv/ppo"
    capacity: Capacity = Capacity()
    mirrors: tuple[Id, ...] = ()


class Contact(_Model):
    name: str = Field(min_length=1)
    email: Email


class Client(_Model):
    id: Id
    name: str = Field(min_length=1)
    server: Id
    data_path: RelativePath
    url: HttpUrl
    countries: tuple[Country, ...] = Field(min_length=1)
    size_gb: float = Field(ge=0, default=0.0)
    contacts: tuple[Contact, ...] = ()


class Person(_Model):
    id: Id
    name: str = Field(min_length=1)
    email: Email | None = None
    sms: Phone | None = None


class EscalationLevel(_Model):
    name: str = Field(min_length=1)
    notify: tuple[Id, ...] = Field(min_length=1)
    channels: tuple[Literal["sms", "email"], ...] = ("sms", "email")
    ack_deadline: Duration = 300


class EscalationPolicy(_Model):
    levels: tuple[EscalationLevel, ...] = Field(min_length=1)
    repeat: int = Field(ge=0, le=10, default=1)
    ack_timeout: Duration = 1800
    public_after: Duration = 600
    public_every: Duration = 900
    clients_after: Duration = 1800
    auto_failover: bool = False


class Vantage(_Model):
    """A network path the probe checks from: direct (no proxy) or through an HTTP(S)
    proxy in another network. With two or more, an outage needs a majority of them."""

    id: Id
    proxy: HttpUrl | None = None


class Timing(_Model):
    mirror_cron: str = Field(default="0 * * * *", pattern=r"^\S+( \S+){4}$")
    # The scheduled DR drill (flows/drill.py): restore a few canary clients, daily.
    drill_cron: str = Field(default="30 3 * * *", pattern=r"^\S+( \S+){4}$")
    probe_interval: Duration = 10
    probe_timeout: Duration = 5
    outage_threshold: Duration = 180
    recovery_successes: int = Field(ge=1, le=100, default=3)
    # An answer slower than this is a failed check (a hung page is an outage to users).
    latency_budget_ms: int | None = Field(default=None, ge=1, le=600_000)
    # Several vantages: a target is failing only if a majority of them see it fail.
    vantages: tuple[Vantage, ...] = Field(default=(), max_length=9)

    @model_validator(mode="after")
    def _vantage_ids_unique(self) -> Timing:
        ids = [v.id for v in self.vantages]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise _broken("unique ids", f"vantage id(s) used more than once: {', '.join(twice)}")
        return self

    @model_validator(mode="after")
    def _budget_within_timeout(self) -> Timing:
        if (
            self.latency_budget_ms is not None
            and self.latency_budget_ms > self.probe_timeout * 1000
        ):
            raise _broken(
                "latency budget within probe timeout",
                f"latency_budget_ms {self.latency_budget_ms} exceeds probe_timeout "
                f"({self.probe_timeout} s): the check would time out before it is slow",
            )
        return self


class EmailChannel(_Model):
    provider: Literal["sendgrid", "outbox"] = "outbox"
    sender: Email = "noc@example.com"
    api_key: Secret | None = None


class SmsChannel(_Model):
    provider: Literal["sns", "outbox"] = "outbox"
    region: str | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None


class XChannel(_Model):
    provider: Literal["x", "outbox"] = "outbox"
    consumer_key: Secret | None = None
    consumer_secret: Secret | None = None
    access_token: Secret | None = None
    access_token_secret: Secret | None = None


class Channels(_Model):
    email: EmailChannel = EmailChannel()
    sms: SmsChannel = SmsChannel()
    x: XChannel = XChannel()
    outbox: str | None = None


def _store_url(value: str) -> str:
    if re.search(r"://[^/@]*:[^/@]*@", value):
        raise _broken(
            "secrets are references", "store.url must not carry a password; use store.url_secret"
        )
    return value


class StoreConfig(_Model):
    url: Annotated[str, AfterValidator(_store_url)] | None = None
    url_secret: Secret | None = None


class Access(_Model):
    """How the runbooks log in to the servers.

    Host keys are pinned per server in ``servers[].ssh.host_key`` (never learnt on
    first use); this names the operator's private key: a file (relative paths are
    relative to the fleet file) or a Prefect Secret block / variable holding it.
    """

    key_file: str | None = Field(default=None, min_length=1)
    key_secret: Secret | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> Access:
        if self.key_file is not None and self.key_secret is not None:
            raise _broken("secret reference", "name key_file or key_secret, not both")
        if self.key_file is not None and "\x00" in self.key_file:
            raise _broken("absolute path", "key_file must not contain a NUL byte")
        return self


class MirrorPolicy(_Model):
    """How the mirror runbook stores snapshots.

    ``encryption_key`` encrypts repositories at rest (AES-256-GCM): a reference to 32
    bytes written as 64 hex digits or base64, never the key itself. Without it the
    repositories are readable by whoever can read the mirror's disk (SSH still
    encrypts everything in transit).
    """

    encryption_key: Secret | None = None
    compression: Literal["auto", "zstd", "none"] = "auto"
    pre_snapshot_hook: bool = True
    keep_last: int = Field(ge=1, le=1000, default=1)
    keep_hourly: int = Field(ge=0, le=10000, default=24)
    keep_daily: int = Field(ge=0, le=10000, default=7)
    keep_weekly: int = Field(ge=0, le=10000, default=4)


class Fleet(_Model):
    """A validated fleet; build it with :func:`load_fleet` or :func:`parse_fleet`."""

    version: Literal[1] = 1
    name: Id
    access: Access = Access()
    store: StoreConfig = StoreConfig()
    timing: Timing = Timing()
    mirror: MirrorPolicy = MirrorPolicy()
    channels: Channels = Channels()
    data_centres: tuple[DataCentre, ...]
    servers: tuple[Server, ...]
    clients: tuple[Client, ...] = ()
    people: tuple[Person, ...] = ()
    escalation: EscalationPolicy | None = None

    # ---- look-ups the runbooks use (the rules guarantee the references resolve)

    def dc(self, dc_id: str) -> DataCentre:
        return _by_id(self.data_centres, dc_id, "data centre")

    def server(self, server_id: str) -> Server:
        return _by_id(self.servers, server_id, "server")

    def client(self, client_id: str) -> Client:
        return _by_id(self.clients, client_id, "client")

    def person(self, person_id: str) -> Person:
        return _by_id(self.people, person_id, "person")

    def country_of(self, server_id: str) -> str:
        return self.dc(self.server(server_id).dc).country

    def servers_by_role(self, role: str) -> list[Server]:
        return [s for s in self.servers if s.role == role]

    def servers_in(self, dc_id: str) -> list[Server]:
        return [s for s in self.servers if s.dc == dc_id]

    def clients_on(self, server_id: str) -> list[Client]:
        return [c for c in self.clients if c.server == server_id]

    def onsite_mirror(self, server_id: str) -> Server:
        """The one mirror in the same data centre as *server_id*."""
        app = self.server(server_id)
        return next(m for m in map(self.server, app.mirrors) if m.dc == app.dc)

    def offsite_mirrors(self, server_id: str) -> list[Server]:
        """The mirrors of *server_id* in other data centres."""
        app = self.server(server_id)
        return [m for m in map(self.server, app.mirrors) if m.dc != app.dc]


_T = TypeVar("_T", DataCentre, Server, Client, Person)


def _by_id(items: Iterable[_T], wanted: str, what: str) -> _T:
    for item in items:
        if item.id == wanted:
            return item
    raise KeyError(f"no {what} {wanted!r} in the fleet")


# --------------------------------------------------------------------------- loading


@dataclass
class _Checker:
    """Collects violations with the file name and the YAML line of each path."""

    file: str
    lines: dict[tuple[str | int, ...], int]
    found: list[Violation]

    def add(self, loc: tuple[str | int, ...], rule: str, message: str) -> None:
        line = None
        for cut in range(len(loc), -1, -1):
            line = self.lines.get(loc[:cut])
            if line is not None:
                break
        self.found.append(Violation(self.file, _format_loc(loc, self.ids), rule, message, line))

    ids: dict[tuple[str | int, ...], str] | None = None


def _format_loc(loc: tuple[str | int, ...], ids: dict[tuple[str | int, ...], str] | None) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            label = (ids or {}).get(loc[: i + 1])
            out += f"[{label}]" if label else f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_RULE_OF_PYDANTIC = {
    "missing": "required field",
    "extra_forbidden": "unknown field",
    "literal_error": "allowed values",
    "greater_than_equal": "range",
    "less_than_equal": "range",
    "too_short": "not empty",
    "string_too_short": "not empty",
    "string_pattern_mismatch": "syntax",
}


def _rule_for(error: Any) -> str:
    if error.get("type") in _OUR_RULES:
        return str(error["type"])
    if "port" in [str(p) for p in error.get("loc", ())]:
        return "port range 1-65535"
    return _RULE_OF_PYDANTIC.get(error.get("type", ""), "field type")


def _line_map(text: str) -> dict[tuple[str | int, ...], int]:
    """Map each path in the YAML document to its 1-based line, for error messages."""
    lines: dict[tuple[str | int, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return lines

    def walk(node: yaml.Node, loc: tuple[str | int, ...]) -> None:
        lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[(*loc, key.value)] = key.start_mark.line + 1
                walk(value, (*loc, key.value))
                lines[(*loc, key.value)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*loc, index))

    if root is not None:
        with contextlib.suppress(RecursionError):  # lines are a courtesy, not a rule
            walk(root, ())
    return lines


_SECTIONS: dict[str, type[BaseModel]] = {
    "data_centres": DataCentre,
    "servers": Server,
    "clients": Client,
    "people": Person,
}


def parse_fleet(text: str, file: str = "fleet.yaml") -> Fleet:
    """Validate fleet YAML *text*; raise :class:`InventoryError` listing every violation."""
    fleet, violations = check_fleet_text(text, file)
    if fleet is None or violations:
        raise InventoryError(file, violations)
    key_file = fleet.access.key_file
    if key_file is not None and not Path(key_file).is_absolute():
        resolved = str(Path(file).resolve().parent / key_file)
        fleet = fleet.model_copy(update={"access": Access(key_file=resolved)})
    return fleet


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file; raise :class:`InventoryError` on any violation."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InventoryError(
            str(path), [Violation(str(path), "", "readable file", reason)]
        ) from exc
    return parse_fleet(text, str(path))


def check_fleet_text(text: str, file: str = "fleet.yaml") -> tuple[Fleet | None, list[Violation]]:
    """Validate fleet YAML; return the fleet (if it parsed) and every violation found."""
    check = _Checker(file, _line_map(text), [])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem, context = getattr(exc, "problem", None), getattr(exc, "context", None)
        message = problem or str(exc).splitlines()[0]
        if problem and context:
            message += f" ({context})"
        check.found.append(Violation(file, "", "YAML syntax", message, line))
        return None, check.found
    except RecursionError:
        check.found.append(Violation(file, "", "YAML syntax", "the document is nested too deeply"))
        return None, check.found
    if not isinstance(data, dict):
        check.add(
            (), "document shape", "the document must be a mapping with data_centres, servers, ..."
        )
        return None, check.found

    # Only well-formed ids label a path; a hostile one is shown by its index.
    check.ids = {
        (section, i): item["id"]
        for section in _SECTIONS
        for i, item in enumerate(data.get(section) or [])
        if isinstance(item, dict) and is_valid_id(item.get("id"))
    }

    # Each list item is validated alone, so one bad server does not hide the others.
    cleaned: dict[str, Any] = dict(data)
    for section, model in _SECTIONS.items():
        items = data.get(section, [] if section in {"clients", "people"} else None)
        if items is None:
            check.add((section,), "required field", f"'{section}' is required")
            cleaned[section] = []
            continue
        if not isinstance(items, list):
            check.add((section,), "field type", f"'{section}' must be a list")
            cleaned[section] = []
            continue
        good = []
        for index, item in enumerate(items):
            try:
                good.append(TypeAdapter(model).validate_python(item))
            except ValidationError as exc:
                for error in exc.errors():
                    check.add((section, index, *error["loc"]), _rule_for(error), error["msg"])
        cleaned[section] = good

    fleet: Fleet | None
    try:
        fleet = checked = Fleet.model_validate(cleaned)
    except ValidationError as exc:
        fleet = None
        for error in exc.errors():
            check.add(tuple(error["loc"]), _rule_for(error), error["msg"])
        # Leave the broken settings out (reported above) and check the items against
        # each other anyway, so a bad setting does not hide a topology mistake.
        for error in exc.errors():
            if error["loc"]:
                cleaned.pop(str(error["loc"][0]), None)
        cleaned.setdefault("name", "unnamed")
        try:
            checked = Fleet.model_validate(cleaned)
        except ValidationError:
            return None, check.found

    for loc, rule, message in _topology_problems(checked, data):
        check.add(loc, rule, message)
    return fleet, check.found


# --------------------------------------------------------------------------- topology rules

Problem = tuple[tuple[str | int, ...], str, str]


def _index(data: dict[str, Any], section: str, item_id: str) -> int:
    for i, item in enumerate(data.get(section) or []):
        if isinstance(item, dict) and item.get("id") == item_id:
            return i
    return 0


def _topology_problems(fleet: Fleet, data: dict[str, Any]) -> Iterator[Problem]:
    """Every cross-item rule: uniqueness, references, mirrors, residency, capacity."""

    def at(section: str, item_id: str, *rest: str | int) -> tuple[str | int, ...]:
        return (section, _index(data, section, item_id), *rest)

    for section in _SECTIONS:
        items = getattr(fleet, section)
        counts = Counter(item.id for item in items)
        for item_id, n in counts.items():
            if n > 1:
                yield at(section, item_id, "id"), "unique ids", f"id {item_id!r} is used {n} times"

    dcs = {d.id: d for d in fleet.data_centres}
    servers = {s.id: s for s in fleet.servers}
    people = {p.id for p in fleet.people}
    # Items that are in the file but failed validation were reported already; a
    # reference to them is not a second mistake.
    in_file = {
        section: {item.get("id") for item in data.get(section) or [] if isinstance(item, dict)}
        for section in _SECTIONS
    }

    endpoints: dict[tuple[str, int], str] = {}
    for s in fleet.servers:
        if s.dc not in in_file["data_centres"]:
            yield at("servers", s.id, "dc"), "known reference", f"unknown data centre {s.dc!r}"
        yield from _reach_problems(s, at)
        for kind, endpoint in (("ssh", s.ssh), ("http", s.http)):
            if endpoint is None:
                continue
            key = (endpoint.host, endpoint.port)
            if key in endpoints and endpoints[key] != s.id:
                yield (
                    at("servers", s.id, kind, "port"),
                    "unique endpoints",
                    f"{endpoint.host}:{endpoint.port} is also used by server {endpoints[key]!r}",
                )
            endpoints.setdefault(key, s.id)
        if s.role == "app":
            if s.http is None:
                yield at("servers", s.id), "app servers serve HTTP", "an app server needs 'http'"
            yield from _mirror_problems(s, servers, in_file["servers"], at)
        elif s.mirrors:
            yield (
                at("servers", s.id, "mirrors"),
                "mirrors belong to app servers",
                (f"{_a(s.role)} server has no mirrors of its own"),
            )

    paths: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for c in fleet.clients:
        home = servers.get(c.server)
        if home is None:
            if c.server not in in_file["servers"]:
                yield (
                    at("clients", c.id, "server"),
                    "known reference",
                    f"unknown server {c.server!r}",
                )
            continue
        if home.role != "app":
            yield (
                at("clients", c.id, "server"),
                "clients sit on app servers",
                (f"server {c.server!r} is {_a(home.role)} server"),
            )
        for other_id, other_path in paths[c.server]:
            if _overlaps(c.data_path, other_path):
                yield (
                    at("clients", c.id, "data_path"),
                    "data paths do not overlap",
                    (f"{c.data_path!r} overlaps {other_path!r} of client {other_id!r}"),
                )
        paths[c.server].append((c.id, c.data_path))
        for role, sid in [("home server", c.server)] + [("mirror", m) for m in home.mirrors]:
            where = servers.get(sid)
            country = dcs[where.dc].country if where and where.dc in dcs else None
            if country is not None and country not in c.countries:
                yield (
                    at("clients", c.id, "countries"),
                    "residency",
                    (
                        f"its {role} {sid!r} is in {country}, which the client does not allow "
                        f"(allowed: {', '.join(c.countries)})"
                    ),
                )

    for s in fleet.servers:
        hosted = fleet.clients_on(s.id)
        if len(hosted) > s.capacity.clients:
            yield (
                at("servers", s.id, "capacity", "clients"),
                "capacity",
                (f"{len(hosted)} clients placed, capacity is {s.capacity.clients}"),
            )
        size = sum(c.size_gb for c in hosted)
        if size > s.capacity.disk_gb:
            yield (
                at("servers", s.id, "capacity", "disk_gb"),
                "capacity",
                (f"clients need {size:g} GB, capacity is {s.capacity.disk_gb:g} GB"),
            )

    if fleet.escalation is not None:
        for li, level in enumerate(fleet.escalation.levels):
            for pi, person_id in enumerate(level.notify):
                loc: tuple[str | int, ...] = ("escalation", "levels", li, "notify", pi)
                if person_id not in people:
                    if person_id in in_file["people"]:
                        continue
                    yield loc, "known reference", f"unknown person {person_id!r}"
                    continue
                person = fleet.person(person_id)
                if not any(getattr(person, ch) for ch in level.channels):
                    yield (
                        loc,
                        "reachable people",
                        (f"{person_id!r} has none of: {', '.join(level.channels)}"),
                    )

    yield from _channel_problems(fleet)


def _reach_problems(s: Server, at: Any) -> Iterator[Problem]:
    """How a server is reached: ``ssh``, or for a mirror an S3 bucket (``s3``)."""
    if s.s3 is None:
        if s.ssh is None:
            yield (
                at("servers", s.id, "ssh"),
                "required field",
                "'ssh' is required"
                + (" (or 's3' for a mirror in object storage)" if s.role == "mirror" else ""),
            )
        return
    if s.role != "mirror":
        yield (
            at("servers", s.id, "s3"),
            "s3 is for mirror servers",
            f"only a mirror can be an S3 bucket; this is {_a(s.role)} server",
        )
    elif s.ssh is not None:
        yield (
            at("servers", s.id, "s3"),
            "ssh or s3",
            "a mirror is reached over ssh or is an S3 bucket, not both",
        )
    elif "data_root" in s.model_fields_set:
        yield (
            at("servers", s.id, "data_root"),
            "ssh or s3",
            "an S3 mirror keeps its repositories below s3.prefix; data_root does not apply",
        )


def _mirror_problems(
    app: Server, servers: dict[str, Server], in_file: set[Any], at: Any
) -> Iterator[Problem]:
    onsite: list[str] = []
    offsite: list[str] = []
    for i, mirror_id in enumerate(app.mirrors):
        mirror = servers.get(mirror_id)
        if mirror is None:
            if mirror_id in in_file:  # invalid, reported already; its DC is unknown
                return
            yield (
                at("servers", app.id, "mirrors", i),
                "known reference",
                f"unknown server {mirror_id!r}",
            )
            continue
        if mirror.id == app.id:
            yield (
                at("servers", app.id, "mirrors", i),
                "mirror on another server",
                ("an app server cannot mirror to itself"),
            )
            continue
        if mirror.role != "mirror":
            yield (
                at("servers", app.id, "mirrors", i),
                "mirrors are mirror servers",
                (f"{mirror_id!r} is {_a(mirror.role)} server"),
            )
        (onsite if mirror.dc == app.dc else offsite).append(mirror_id)
    if len(onsite) != 1:
        found = ", ".join(onsite) or "none"
        yield (
            at("servers", app.id, "mirrors"),
            "one on-site mirror",
            (f"needs exactly one mirror in its own data centre {app.dc!r}; found {found}"),
        )
    if not offsite:
        yield (
            at("servers", app.id, "mirrors"),
            "off-site mirror",
            ("needs at least one mirror in another data centre"),
        )


def _channel_problems(fleet: Fleet) -> Iterator[Problem]:
    ch = fleet.channels
    if ch.email.provider == "sendgrid" and ch.email.api_key is None:
        yield ("channels", "email", "api_key"), "secret reference", "sendgrid needs api_key"
    if ch.x.provider == "x":
        for name in ("consumer_key", "consumer_secret", "access_token", "access_token_secret"):
            if getattr(ch.x, name) is None:
                yield ("channels", "x", name), "secret reference", f"x needs {name}"
    if ch.sms.provider == "sns" and not ch.sms.region:
        yield ("channels", "sms", "region"), "required field", "sns needs a region"


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


# --------------------------------------------------------------------------- summary


def summary(fleet: Fleet) -> str:
    """A human summary: DCs, servers by role, clients per server, mirror pairs."""
    lines = [
        f"fleet {fleet.name}: {len(fleet.data_centres)} data centres, "
        f"{len(fleet.servers)} servers, {len(fleet.clients)} clients"
    ]
    for dc in fleet.data_centres:
        by_role = Counter(s.role for s in fleet.servers_in(dc.id))
        roles = ", ".join(f"{n} {role}" for role, n in sorted(by_role.items())) or "no servers"
        lines.append(f"  {dc.id} ({dc.country}, {dc.provider}): {roles}")
    lines.append("app servers:")
    for app in fleet.servers_by_role("app"):
        offsite = ", ".join(f"{m.id} ({m.dc})" for m in fleet.offsite_mirrors(app.id))
        lines.append(
            f"  {app.id} [{app.dc}] {len(fleet.clients_on(app.id))}/{app.capacity.clients} clients;"
            f" on-site {fleet.onsite_mirror(app.id).id}; off-site {offsite}"
        )
    spares = [s.id for s in fleet.servers_by_role("spare")]
    lines.append(f"spares: {', '.join(spares) or 'none'}")
    return "\n".join(lines)


def _a(word: str) -> str:
    """'an app', 'a mirror': messages an operator reads should read right."""
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"
