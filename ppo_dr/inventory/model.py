"""The fleet model: data centres, servers, clients, people, policies, and the
look-ups the runbooks use; each item checks its own fields (cross-item rules live in
:mod:`ppo_dr.inventory.rules`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Literal, TypeVar

from pydantic import BaseModel, Field, model_validator

from ppo_dr.inventory.fields import (
    HOST_PATTERN,
    AbsolutePath,
    AwsRegion,
    Country,
    Duration,
    Email,
    FrozenModel,
    HostedZone,
    HostKey,
    HttpUrl,
    Id,
    LaunchTemplate,
    MirrorCron,
    Phone,
    Port,
    RelativePath,
    S3Bucket,
    S3Prefix,
    Secret,
    SecretRef,
    StoreUrl,
    broken,
)


class DataCentre(FrozenModel):
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
    region: AwsRegion | None = None
    launch_template: LaunchTemplate | None = None
    launch_template_version: str = Field(default="$Default", pattern=r"^(\$Default|\$Latest|\d+)$")
    hosted_zone_id: HostedZone | None = None
    dns_ttl: int = Field(default=60, ge=1, le=86400)
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None

    @model_validator(mode="after")
    def _aws_settings(self) -> DataCentre:
        aws_only = ("launch_template", "hosted_zone_id", "access_key_id", "secret_access_key")
        if self.provider != "aws":
            named = [name for name in aws_only if getattr(self, name) is not None]
            if named:
                raise broken(
                    "aws settings need provider aws",
                    f"{', '.join(named)} only apply to provider aws (this one is {self.provider})",
                )
            return self
        missing = [name for name in ("region", "launch_template") if getattr(self, name) is None]
        if missing:
            raise broken(
                "aws data centres name region and launch template",
                f"provider aws needs {' and '.join(missing)}",
            )
        _both_keys_or_neither(self.access_key_id, self.secret_access_key)
        return self


def _both_keys_or_neither(access_key_id: SecretRef | None, secret_key: SecretRef | None) -> None:
    """AWS credentials come as a pair: one without the other is a mistake."""
    if (access_key_id is None) != (secret_key is None):
        raise broken(
            "secret reference", "name both access_key_id and secret_access_key, or neither"
        )


class SshEndpoint(FrozenModel):
    host: str = Field(min_length=1, max_length=253, pattern=HOST_PATTERN)
    port: Port = 22
    user: Id = "ppo"
    host_key: HostKey


class S3Location(FrozenModel):
    """An off-site mirror in object storage: repositories live at
    ``s3://<bucket>/<prefix>/repos/<app-server-id>/``. ``endpoint_url`` is for an
    S3-compatible store (or a test server); credentials are references, and without
    them boto3's standard chain (environment, instance role) is used."""

    bucket: S3Bucket
    prefix: S3Prefix = ""
    region: AwsRegion
    endpoint_url: HttpUrl | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None

    @model_validator(mode="after")
    def _both_keys(self) -> S3Location:
        _both_keys_or_neither(self.access_key_id, self.secret_access_key)
        return self


class HttpEndpoint(FrozenModel):
    host: str = Field(min_length=1, max_length=253, pattern=HOST_PATTERN)
    port: Port = 80


class Capacity(FrozenModel):
    """What a server may hold; ``rpm`` (requests per minute) is optional: a server
    without it is not limited on load."""

    clients: int = Field(ge=0, default=100)
    disk_gb: float = Field(ge=0, default=100.0)
    rpm: int | None = Field(ge=0, default=None)


class Server(FrozenModel):
    id: Id
    dc: Id
    role: Literal["app", "mirror", "spare"]
    ssh: SshEndpoint | None = None  # required, except for a mirror in S3 (then ``s3``)
    s3: S3Location | None = None
    http: HttpEndpoint | None = None
    data_root: AbsolutePath = "/srv/ppo"
    capacity: Capacity = Capacity()
    mirrors: tuple[Id, ...] = ()


class Contact(FrozenModel):
    name: str = Field(min_length=1)
    email: Email


class Client(FrozenModel):
    id: Id
    name: str = Field(min_length=1)
    server: Id
    data_path: RelativePath
    url: HttpUrl
    countries: tuple[Country, ...] = Field(min_length=1)
    size_gb: float = Field(ge=0, default=0.0)
    contacts: tuple[Contact, ...] = ()
    availability_target: float = Field(gt=0, le=100, default=99.9)  # % promised (SLA)


class Person(FrozenModel):
    id: Id
    name: str = Field(min_length=1)
    email: Email | None = None
    sms: Phone | None = None


class EscalationLevel(FrozenModel):
    name: str = Field(min_length=1)
    notify: tuple[Id, ...] = Field(min_length=1)
    channels: tuple[Literal["sms", "email"], ...] = ("sms", "email")
    ack_deadline: Duration = 300


class EscalationPolicy(FrozenModel):
    levels: tuple[EscalationLevel, ...] = Field(min_length=1)
    repeat: int = Field(ge=0, le=10, default=1)
    ack_timeout: Duration = 1800
    public_after: Duration = 600
    public_every: Duration = 900
    clients_after: Duration = 1800
    auto_failover: bool = False


class Vantage(FrozenModel):
    """A network path the probe checks from: direct (no proxy) or through an HTTP(S)
    proxy in another network. With two or more, an outage needs a majority of them."""

    id: Id
    proxy: HttpUrl | None = None


class Timing(FrozenModel):
    # Validated: parses, and never more than an hour between runs (every 5 minutes is
    # supported and measured: docs/repository.md, "A 5-minute cadence").
    mirror_cron: MirrorCron = Field(default="0 * * * *", pattern=r"^\S+( \S+){4}$")
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
            raise broken("unique ids", f"vantage id(s) used more than once: {', '.join(twice)}")
        return self

    @model_validator(mode="after")
    def _budget_within_timeout(self) -> Timing:
        if (
            self.latency_budget_ms is not None
            and self.latency_budget_ms > self.probe_timeout * 1000
        ):
            raise broken(
                "latency budget within probe timeout",
                f"latency_budget_ms {self.latency_budget_ms} exceeds probe_timeout "
                f"({self.probe_timeout} s): the check would time out before it is slow",
            )
        return self


class EmailChannel(FrozenModel):
    """``endpoint_url`` (every channel has one) replaces the provider's public API host:
    for a stand-in (the lab's, tests') or an egress proxy; unset in production."""

    provider: Literal["sendgrid", "outbox"] = "outbox"
    sender: Email = "noc@example.com"
    api_key: Secret | None = None
    endpoint_url: HttpUrl | None = None


class SmsChannel(FrozenModel):
    provider: Literal["sns", "outbox"] = "outbox"
    region: str | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    endpoint_url: HttpUrl | None = None


class XChannel(FrozenModel):
    provider: Literal["x", "outbox"] = "outbox"
    endpoint_url: HttpUrl | None = None
    consumer_key: Secret | None = None
    consumer_secret: Secret | None = None
    access_token: Secret | None = None
    access_token_secret: Secret | None = None


class Channels(FrozenModel):
    email: EmailChannel = EmailChannel()
    sms: SmsChannel = SmsChannel()
    x: XChannel = XChannel()
    outbox: str | None = None


class StoreConfig(FrozenModel):
    url: StoreUrl | None = None
    url_secret: Secret | None = None


class Access(FrozenModel):
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
            raise broken("secret reference", "name key_file or key_secret, not both")
        if self.key_file is not None and "\x00" in self.key_file:
            raise broken("absolute path", "key_file must not contain a NUL byte")
        return self


class MirrorPolicy(FrozenModel):
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


class Fleet(FrozenModel):
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


SECTIONS: dict[str, type[BaseModel]] = {
    "data_centres": DataCentre,
    "servers": Server,
    "clients": Client,
    "people": Person,
}


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
