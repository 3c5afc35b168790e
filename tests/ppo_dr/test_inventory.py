"""Every fleet.yaml rule, each broken by one small edit of ``examples/fleet.yaml``.

A case loads the example as a dict, applies one mutation, dumps it back to YAML and
checks that the violation names the expected rule, the expected path inside the file
(``servers[app-jhb1-1].ssh.port``) and a line that really shows that path.
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ppo_dr.errors import InventoryError, Violation
from ppo_dr.ids import ID_RULE
from ppo_dr.inventory import Fleet, check_fleet_text, load_fleet, parse_fleet, summary
from tests.ppo_dr.hostile_ids import HOSTILE_ID_SAMPLE

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml"
EXAMPLE_DOC: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))

Doc = dict[str, Any]
Mutation = Callable[[Doc], None]

# ----------------------------------------------------------------------------- helpers

_STEP = re.compile(r"\.?([A-Za-z_]\w*)|\[([^\]]*)\]")
DELETE = object()


def steps(path: str) -> list[str | tuple[str]]:
    """'servers[app-jhb1-1].ssh.port' -> ['servers', ('app-jhb1-1',), 'ssh', 'port']."""
    out: list[str | tuple[str]] = []
    pos = 0
    while pos < len(path):
        match = _STEP.match(path, pos)
        assert match, f"bad path {path!r} at {pos}"
        out.append(match.group(1) if match.group(1) is not None else (match.group(2),))
        pos = match.end()
    return out


def child_key(node: Any, step: str | tuple[str]) -> Any:
    """The dict key or list index that *step* names in *node* (a [label] is an id or index)."""
    if isinstance(step, str):
        return step
    (label,) = step
    if label.isdigit():
        return int(label)
    for index, item in enumerate(node):
        if isinstance(item, dict) and item.get("id") == label:
            return index
    raise KeyError(label)


def resolve(doc: Doc, path: str) -> Any:
    node: Any = doc
    for step in steps(path):
        node = node[child_key(node, step)]
    return node


def put(path: str, value: Any) -> Mutation:
    """A mutation that sets (or, with DELETE, removes) the value at *path*."""

    def mutate(doc: Doc) -> None:
        *parents, last = steps(path)
        node: Any = doc
        for step in parents:
            node = node[child_key(node, step)]
        key = child_key(node, last)
        if value is DELETE:
            del node[key]
        else:
            node[key] = copy.deepcopy(value)

    return mutate


def append(section: str, item: Any) -> Mutation:
    def mutate(doc: Doc) -> None:
        resolve(doc, section).append(copy.deepcopy(item))

    return mutate


def copy_of(path: str, **changes: Any) -> Mutation:
    """Append to the list holding *path* a copy of that item, with *changes* applied."""

    def mutate(doc: Doc) -> None:
        section = path.split("[", 1)[0]
        item = copy.deepcopy(resolve(doc, path))
        item.update(changes)
        doc[section].append(item)

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(doc: Doc) -> None:
        for mutation in mutations:
            mutation(doc)

    return mutate


def example() -> Doc:
    return copy.deepcopy(EXAMPLE_DOC)


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)


def check(mutation: Mutation) -> tuple[Doc, str, Fleet | None, list[Violation]]:
    doc = example()
    mutation(doc)
    text = dump(doc)
    fleet, violations = check_fleet_text(text, "fleet.yaml")
    return doc, text, fleet, violations


def assert_line_shows(text: str, doc: Doc, path: str, line: int | None) -> None:
    """The reported line exists and, where the path is in the file, shows it."""
    lines = text.splitlines()
    assert line is not None, f"{path}: no line reported"
    assert 1 <= line <= len(lines), f"{path}: line {line} outside the file"
    try:
        node = resolve(doc, path) if path else doc
    except (KeyError, IndexError, TypeError):
        return  # a missing field is reported at its parent's line
    shown = lines[line - 1]
    last = steps(path)[-1] if path else None
    if isinstance(last, str):
        assert f"{last}:" in shown, f"{path}: line {line} is {shown!r}"
    elif isinstance(node, dict) and "id" in node:
        assert "id:" in shown, f"{path}: line {line} is {shown!r}"
    elif isinstance(node, str) and re.fullmatch(r"[\w.-]+", node):
        assert node in shown, f"{path}: line {line} is {shown!r}"


# ----------------------------------------------------------------------------- the example


def test_example_fleet_is_valid() -> None:
    fleet, violations = check_fleet_text(EXAMPLE.read_text(encoding="utf-8"), str(EXAMPLE))
    assert violations == []
    assert fleet is not None
    assert len({dc.country for dc in fleet.data_centres}) == 2
    assert len(fleet.data_centres) == 3
    assert load_fleet(EXAMPLE) == fleet


def test_round_trip_of_the_example_is_valid() -> None:
    """The dump used by every case does not by itself break a rule."""
    _, _, fleet, violations = check(lambda doc: None)
    assert violations == []
    assert fleet is not None


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    name: str
    mutate: Mutation
    rule: str
    path: str
    says: str | None = None  # a fragment the message must contain

    def __str__(self) -> str:
        return self.name


def bad(path: str, value: Any, rule: str, says: str | None = None, at: str | None = None) -> Case:
    """Set *path* to *value* (DELETE removes it); expect *rule* at *path* (or at *at*)."""
    shown = "(deleted)" if value is DELETE else repr(value)
    return Case(f"{path} = {shown}", put(path, value), rule, at or path, says)


def each(path: str, values: list[Any], rule: str) -> list[Case]:
    return [bad(path, value, rule) for value in values]


S1 = "servers[app-jhb1-1]"
S2 = "servers[app-jhb1-2]"
C1 = "clients[acme-mining]"
C2 = "clients[karoo-logistics]"
THAMES = "clients[thames-advisory]"
KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIBc8S/DgXEKaFYyc7BR+I4z9Ipxyu6sNZ0TNLfJxZUnT"
NEW_MIRROR = {
    "id": "mirror-jhb1-2",
    "dc": "jhb1",
    "role": "mirror",
    "ssh": {"host": "mirror2.jhb1.ppo.example", "host_key": f"ssh-ed25519 {KEY}"},
}
REQUIRED, UNKNOWN, ALLOWED = "required field", "unknown field", "allowed values"
REF, REFERENCES, PORT = "known reference", "secrets are references", "port range 1-65535"
RELATIVE, SECRET = "relative path inside the data root", "secret reference"

CASES: list[Case] = [
    # ---- document structure
    bad("data_centres", DELETE, REQUIRED),
    bad("servers", DELETE, REQUIRED),
    bad("name", DELETE, REQUIRED),
    bad("servers", {"a": 1}, "field type"),
    bad("servers[0]", "app-jhb1-1", "field type"),
    bad(f"{S1}.ssh", DELETE, REQUIRED),
    bad(f"{S1}.ssh.host_key", DELETE, REQUIRED),
    bad(f"{C1}.url", DELETE, REQUIRED),
    bad("version", 2, ALLOWED),
    bad(f"{S1}.role", "db", ALLOWED),
    bad("data_centres[jhb1].provider", "gcp", ALLOWED),
    bad(
        "escalation.levels[0].channels", ["pigeon"], ALLOWED, at="escalation.levels[0].channels[0]"
    ),
    # ---- unknown fields (extra=forbid), and secrets written inline
    bad("colour", "red", UNKNOWN),
    bad(f"{S1}.password", "hunter2", UNKNOWN),
    bad(f"{S1}.ssh.prot", 22, UNKNOWN),
    bad(f"{C1}.owner", "x", UNKNOWN),
    bad("timing.probe_every", "5s", UNKNOWN),
    bad("channels.email.key", "SG.xxx", UNKNOWN),
    bad("channels.email.api_key.value", "SG.xxx", UNKNOWN),
    bad("channels.email.api_key", "SG.xxx", REFERENCES),
    bad("channels.sms.secret_access_key", "wJalrXUtnFEMI", REFERENCES),
    bad("channels.x.access_token", "123-abc", REFERENCES),
    bad("store.url_secret", "postgresql://u:p@db/ppo", REFERENCES),
    bad("store.url", "postgresql://ppo:hunter2@db/ppo", REFERENCES),
    bad("store.url", "postgresql+psycopg://:hunter2@db/ppo", REFERENCES),
    # ---- duplicate ids
    Case("duplicate dc", copy_of("data_centres[jhb1]"), "unique ids", "data_centres[jhb1].id"),
    Case("duplicate server", copy_of(S1), "unique ids", f"{S1}.id"),
    Case("duplicate client", copy_of(C1, data_path="clients/other"), "unique ids", f"{C1}.id"),
    Case("duplicate person", copy_of("people[sipho]"), "unique ids", "people[sipho].id"),
    # ---- unknown references
    bad(f"{S1}.dc", "dur1", REF, "'dur1'"),
    bad(f"{S1}.mirrors[1]", "mirror-nowhere", REF, "'mirror-nowhere'"),
    bad(f"{C1}.server", "app-nowhere", REF, "'app-nowhere'"),
    bad("escalation.levels[1].notify[0]", "nobody", REF, "'nobody'"),
    # ---- servers and mirrors
    bad(f"{S1}.http", DELETE, "app servers serve HTTP", at=S1),
    bad(f"{S1}.mirrors", ["mirror-cpt1-1"], "one on-site mirror", "found none"),
    Case(
        "two on-site mirrors",
        both(
            append("servers", NEW_MIRROR),
            put(f"{S1}.mirrors", ["mirror-jhb1-1", "mirror-jhb1-2", "mirror-cpt1-1"]),
        ),
        "one on-site mirror",
        f"{S1}.mirrors",
        "found mirror-jhb1-1, mirror-jhb1-2",
    ),
    bad(f"{S1}.mirrors", ["mirror-jhb1-1", "mirror-jhb1-1", "mirror-cpt1-1"], "one on-site mirror"),
    bad(f"{S1}.mirrors", ["mirror-jhb1-1"], "off-site mirror"),
    bad(f"{S1}.mirrors", DELETE, "one on-site mirror"),
    bad(f"{S1}.mirrors", [], "off-site mirror"),
    bad(
        f"{S1}.mirrors",
        ["app-jhb1-1", "mirror-cpt1-1"],
        "mirror on another server",
        at=f"{S1}.mirrors[0]",
    ),
    bad(
        f"{S1}.mirrors",
        ["spare-jhb1-1", "mirror-cpt1-1"],
        "mirrors are mirror servers",
        "a spare server",
        at=f"{S1}.mirrors[0]",
    ),
    bad(f"{S1}.mirrors[1]", "app-cpt1-1", "mirrors are mirror servers", "app server"),
    bad("servers[spare-jhb1-1].mirrors", ["mirror-cpt1-1"], "mirrors belong to app servers"),
    bad("servers[mirror-jhb1-1].mirrors", ["mirror-cpt1-1"], "mirrors belong to app servers"),
    # ---- clients
    bad(f"{C1}.server", "spare-jhb1-1", "clients sit on app servers", "a spare server"),
    bad(f"{C1}.server", "mirror-jhb1-1", "clients sit on app servers", "a mirror server"),
    bad(f"{THAMES}.countries", ["ZA"], "residency", "home server 'app-lon1-1' is in GB"),
    bad(f"{THAMES}.countries", ["GB"], "residency", "mirror 'mirror-jhb1-1' is in ZA"),
    bad(
        f"{S1}.mirrors",
        ["mirror-jhb1-1", "mirror-cpt1-1", "mirror-lon1-1"],
        "residency",
        "mirror 'mirror-lon1-1' is in GB",
        at=f"{C1}.countries",
    ),
    bad(f"{C1}.countries", [], "not empty"),
    bad(f"{C1}.name", "", "not empty"),
    bad(f"{C1}.contacts[0].email", "it-at-acme", "e-mail address"),
    # ---- data paths and data roots
    *each(
        f"{C1}.data_path",
        [
            "/etc",
            "/srv/ppo/clients/acme",
            "../other",
            "clients/../../etc",
            "clients/..",
            "clients/a\x00b",
            "\x00",
            "clients\\acme",
            "\\\\host\\share",
            "C:\\data",
            "",
            "   ",
            ".",
            "./",
            "./clients",
            "clients//acme",
            "clients/./acme",
        ],
        RELATIVE,
    ),
    bad(f"{C2}.data_path", "clients/acme-mining", "data paths do not overlap", "'acme-mining'"),
    bad(f"{C2}.data_path", "clients/acme-mining/karoo", "data paths do not overlap"),
    bad(f"{C2}.data_path", "clients", "data paths do not overlap"),
    *each(
        f"{S1}.data_root", ["srv/ppo", "", "./srv", "/srv/../etc", "/srv/p\x00po"], "absolute path"
    ),
    # ---- ports and endpoints
    *each(f"{S1}.ssh.port", [0, 65536, -22, 10**6, "ssh", "22", 22.5, True, None], PORT),
    *each(f"{S1}.http.port", [0, 65536, "http"], PORT),
    bad(
        f"{S2}.ssh.host",
        "app1.jhb1.ppo.example",
        "unique endpoints",
        "'app-jhb1-1'",
        at=f"{S2}.ssh.port",
    ),
    bad(f"{S2}.http.host", "app1.jhb1.ppo.example", "unique endpoints", at=f"{S2}.http.port"),
    *each(f"{S1}.ssh.host", ["-oProxyCommand", "host;reboot", "a b", "$(reboot)", "h/x"], "syntax"),
    bad(f"{S1}.http.host", "", "not empty"),
    # ---- capacity
    bad(f"{S1}.capacity.clients", 1, "capacity", "2 clients placed, capacity is 1"),
    bad(f"{S1}.capacity.disk_gb", 10, "capacity", "clients need 16 GB"),
    bad(f"{S1}.capacity.clients", -1, "range"),
    *each(f"{S1}.capacity.rpm", [-1, -600], "range"),
    bad(f"{S1}.capacity.rpm", "lots", "field type"),
    bad(f"{C1}.size_gb", -1, "range"),
    # ---- country codes
    *each("data_centres[jhb1].country", ["za", "ZAF", "Z1", "", "South Africa"], "country code"),
    bad(f"{C1}.countries[0]", "RSA", "country code"),
    # ---- durations
    *each(
        "timing.outage_threshold",
        [
            "soon",
            0,
            -5,
            True,
            False,
            "0s",
            "-5s",
            "1.5h",
            "5 minutes",
            "3M",
            "",
            1.5,
            None,
            [3],
        ],
        "duration",
    ),
    bad("escalation.levels[0].ack_deadline", "whenever", "duration"),
    bad("escalation.ack_timeout", 0, "duration"),
    bad("timing.mirror_cron", "hourly", "syntax"),
    bad("timing.mirror_cron", "61 * * * *", "cron syntax", "outside 0-59"),
    bad("timing.mirror_cron", "*/5 * * 13 *", "cron syntax", "outside 1-12"),
    bad("timing.mirror_cron", "0 */2 * * *", "mirror at least hourly", "2:00:00"),
    bad("timing.mirror_cron", "0 3 * * *", "mirror at least hourly", "1 day"),
    bad("timing.mirror_cron", "0,30 0-22 * * *", "mirror at least hourly", "1:30:00"),
    bad("timing.recovery_successes", 0, "range"),
    bad("mirror.keep_last", 0, "range"),
    bad("mirror.compression", "lz4", "allowed values"),
    bad("mirror.encryption_key", "0123abcd" * 8, REFERENCES),
    bad("timing.latency_budget_ms", 0, "range"),
    bad("timing.latency_budget_ms", "2s", "field type"),
    bad(
        "timing.latency_budget_ms",
        5001,
        "latency budget within probe timeout",
        "exceeds probe_timeout (5 s)",
        at="timing",
    ),
    bad("timing.vantages", [{"id": "eu"}, {"id": "eu"}], "unique ids", "eu", at="timing"),
    bad("timing.vantages", [{"id": "EU"}], ID_RULE, at="timing.vantages[0].id"),
    bad(
        "timing.vantages",
        [{"id": "eu", "proxy": "socks5://p:1080"}],
        "http(s) URL",
        at="timing.vantages[0].proxy",
    ),
    bad(
        "timing.vantages",
        [{"id": "eu", "proxy": "http://u:pw@p:3128"}],
        "http(s) URL",
        "must not carry a password",
        at="timing.vantages[0].proxy",
    ),
    bad("timing.vantages", [{"id": "eu", "via": "x"}], UNKNOWN, at="timing.vantages[0].via"),
    # ---- e-mail and phone
    *each(
        "people[sipho].email",
        [
            "sipho",
            "sipho@ppo",
            "si pho@ppo.example",
            "@ppo.example",
            "a@@b.example",
        ],
        "e-mail address",
    ),
    bad("channels.email.sender", "noc", "e-mail address"),
    *each(
        "people[sipho].sms",
        [
            "0820000001",
            "+0820000001",
            "+27 82 000 0001",
            "+27",
            "+1234567890123456",
            "27820000001",
            "+27-82-000-0001",
        ],
        "E.164 phone number",
    ),
    bad("people[sipho].sms", 27820000001, "field type"),  # unquoted in YAML: a number
    # ---- host keys
    *each(
        f"{S1}.ssh.host_key",
        [
            "",
            "ssh-ed25519",
            KEY,
            "ed25519 AAAA",
            "ssh-ed25519 not*base64!",
            "ssh-ed25519 AAA",
            "ssh-rsa AA=A",
            "ssh-rsa AAAAA",
        ],
        "host key",
    ),
    # ---- URLs
    *each(
        f"{C1}.url",
        [
            "ftp://acme.example/",
            "acme-mining.ppo.example",
            "javascript:alert(1)",
            "https://",
            "file:///etc/passwd",
            "https://admin:hunter2@acme.example/",
            "ftp://admin:hunter2@acme.example/",
        ],
        "http(s) URL",
    ),
    # ---- secret references
    bad("channels.email.api_key", {}, SECRET, "exactly one"),
    bad("channels.email.api_key", {"env": "K", "block": "k"}, SECRET, "exactly one"),
    bad("store.url_secret", {}, SECRET),
    bad("access", {"key_file": "keys/id", "key_secret": {"env": "K"}}, SECRET, "not both"),
    *[
        bad(
            "channels.sms.access_key_id",
            {"env": env},
            "syntax",
            at="channels.sms.access_key_id.env",
        )
        for env in ["lower_case", "A-B", "1ABC", "A B", "$HOME", ""]
    ],
    bad(
        "channels.email.api_key", {"block": "Send Grid"}, ID_RULE, at="channels.email.api_key.block"
    ),
    # ---- channel providers
    bad("channels.email.api_key", DELETE, SECRET, "sendgrid needs api_key"),
    *[
        bad(f"channels.x.{name}", DELETE, SECRET, f"x needs {name}")
        for name in ["consumer_key", "consumer_secret", "access_token", "access_token_secret"]
    ],
    bad("channels.sms.region", DELETE, REQUIRED, "sns needs a region"),
    # ---- provider endpoints (stand-ins, proxies)
    *[
        bad(f"channels.{kind}.endpoint_url", url, "http(s) URL", says)
        for kind in ["email", "sms", "x"]
        for url, says in [
            ("ftp://relay.example/", "not an http(s) URL"),
            ("http://u:pw@proxy.example:3128", "must not carry a password"),
        ]
    ],
    Case(
        "endpoint_url on the outbox",
        both(
            put("channels.sms.provider", "outbox"),
            put("channels.sms.endpoint_url", "http://127.0.0.1:8080"),
        ),
        "endpoint for a provider",
        "channels.sms.endpoint_url",
        "the outbox has none",
    ),
    # ---- escalation
    Case(
        "person without the level's channel",
        both(put("people[sipho].sms", DELETE), put("escalation.levels[0].channels", ["sms"])),
        "reachable people",
        "escalation.levels[0].notify[0]",
        "'sipho' has none of: sms",
    ),
    Case(
        "person with no channel at all",
        both(put("people[james].sms", DELETE), put("people[james].email", DELETE)),
        "reachable people",
        "escalation.levels[1].notify[0]",
        "'james'",
    ),
    bad("escalation.levels", [], "not empty"),
    bad("escalation.levels[0].notify", [], "not empty"),
    # ---- aws data centres (provisioning and routing settings)
    bad(
        "data_centres[jhb1].launch_template",
        DELETE,
        "aws data centres name region and launch template",
        "needs launch_template",
        at="data_centres[jhb1]",
    ),
    bad(
        "data_centres[lon1].region",
        DELETE,
        "aws data centres name region and launch template",
        "needs region",
        at="data_centres[lon1]",
    ),
    bad(
        "data_centres[cpt1].launch_template",
        "ppo-app-server",
        "aws settings need provider aws",
        "launch_template only apply to provider aws",
        at="data_centres[cpt1]",
    ),
    bad(
        "data_centres[jhb1].access_key_id",
        {"env": "PPO_AWS_KEY_ID"},
        SECRET,
        "or neither",
        at="data_centres[jhb1]",
    ),
    bad("data_centres[jhb1].secret_access_key", "wJalrXUtnFEMI/K7MDENG", REFERENCES),
    *each("data_centres[jhb1].region", ["Africa", "af_south_1", "af-south", ""], "AWS region"),
    *each(
        "data_centres[jhb1].launch_template",
        ["lt-XYZ", "a", "tmpl;rm -rf /", "x" * 129],
        "launch template",
    ),
    *each("data_centres[jhb1].hosted_zone_id", ["z123", "/hostedzone/Z1", "Z 1"], "hosted zone id"),
    bad("data_centres[jhb1].dns_ttl", 0, "range"),
    bad("data_centres[jhb1].launch_template_version", "latest", "syntax"),
]

# ---- S3 mirrors: a mirror server may be a bucket (`s3`) instead of `ssh`
S3M = "servers[mirror-s3-af1]"
S3_SPEC = {"bucket": "ppo-dr-mirror-af1", "prefix": "prod", "region": "af-south-1"}
S3_MIRROR = {"id": "mirror-s3-af1", "dc": "jhb1", "role": "mirror", "s3": S3_SPEC}


def s3_case(
    field: str, value: Any, rule: str, says: str | None = None, at: str | None = None
) -> Case:
    """The S3 mirror added as an off-site mirror of app-cpt1-1, with *field* set."""
    mutate = both(
        append("servers", S3_MIRROR),
        put("servers[app-cpt1-1].mirrors", ["mirror-cpt1-1", "mirror-s3-af1"]),
        put(f"{S3M}.{field}", value),
    )
    shown = "(deleted)" if value is DELETE else repr(value)
    return Case(f"{S3M}.{field} = {shown}", mutate, rule, at or f"{S3M}.{field}", says)


CASES += [
    *[s3_case("s3.bucket", v, "S3 bucket name") for v in ["ab", "Bad_Bucket", "a..b", "-x-", ""]],
    *[
        s3_case("s3.prefix", v, "S3 prefix")
        for v in ["/abs", "a/../b", "a//b", "./a", "x;rm -rf", "a\nb"]
    ],
    s3_case("s3.region", "Africa", "AWS region"),
    s3_case("s3.region", DELETE, REQUIRED),
    s3_case("s3.endpoint_url", "ftp://127.0.0.1:9000", "http(s) URL"),
    s3_case("s3.access_key_id", {"env": "PPO_S3_KEY_ID"}, SECRET, "or neither", at=f"{S3M}.s3"),
    s3_case("s3.secret_access_key", "wJalrXUtnFEMI/K7MDENG", REFERENCES),
    s3_case("s3.acl", "public-read", UNKNOWN),
    s3_case("s3", DELETE, REQUIRED, "or 's3' for a mirror", at=f"{S3M}.ssh"),
    s3_case("ssh", NEW_MIRROR["ssh"], "ssh or s3", "not both", at=f"{S3M}.s3"),
    s3_case("data_root", "/srv/x", "ssh or s3", "data_root does not apply"),
    bad(f"{S1}.s3", S3_SPEC, "s3 is for mirror servers", "this is an app server"),
    bad("servers[spare-jhb1-1].s3", S3_SPEC, "s3 is for mirror servers"),
]

# ---- id syntax, for every kind of id, with hostile values
ID_FIELDS = [
    # (where the id is written, the path the violation names)
    ("name", "name"),
    ("data_centres[jhb1].id", "data_centres[0].id"),
    ("servers[app-jhb1-1].id", "servers[0].id"),
    ("clients[acme-mining].id", "clients[0].id"),
    ("people[sipho].id", "people[0].id"),
    ("servers[app-jhb1-1].dc", "servers[app-jhb1-1].dc"),
    ("servers[app-jhb1-1].mirrors[0]", "servers[app-jhb1-1].mirrors[0]"),
    ("servers[app-jhb1-1].ssh.user", "servers[app-jhb1-1].ssh.user"),
    ("clients[acme-mining].server", "clients[acme-mining].server"),
    ("escalation.levels[0].notify[1]", "escalation.levels[0].notify[1]"),
    ("store.url_secret.block", "store.url_secret.block"),
]
ID_CASES = [
    bad(where, value, ID_RULE, at=path) for where, path in ID_FIELDS for value in HOSTILE_ID_SAMPLE
]


@pytest.mark.parametrize("case", CASES + ID_CASES, ids=str)
def test_each_rule_is_reported_with_rule_path_and_line(case: Case) -> None:
    doc, text, _, violations = check(case.mutate)
    assert violations, f"{case.name}: no violation reported"
    matching = [v for v in violations if v.rule == case.rule and v.path == case.path]
    assert matching, f"{case.name}: wanted [{case.rule}] at {case.path}; got:\n" + "\n".join(
        f"  {v}" for v in violations
    )
    for violation in matching:
        assert violation.file == "fleet.yaml"
        assert_line_shows(text, doc, case.path, violation.line)
        assert f"[rule: {case.rule}]" in str(violation)
        assert f"fleet.yaml:{violation.line}: {case.path}: " in str(violation)
    if case.says:
        assert any(case.says in v.message for v in matching), [v.message for v in matching]


def _rules_in_inventory_source() -> set[str]:
    """Every literal rule name the inventory package can report, read from its syntax trees."""
    import ppo_dr.inventory as inventory
    from ppo_dr.inventory import load

    package = Path(inventory.__file__).parent
    trees = [ast.parse(f.read_text(encoding="utf-8")) for f in sorted(package.glob("*.py"))]
    rules: set[str] = set(load._RULE_OF_PYDANTIC.values())
    for node in (node for tree in trees for node in ast.walk(tree)):
        rule: ast.expr | None = None
        if isinstance(node, ast.Yield) and isinstance(node.value, ast.Tuple):
            if len(node.value.elts) == 3:
                rule = node.value.elts[1]
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            position = {"broken": 0, "_must_match": 1, "add": 1, "Violation": 2}.get(str(name))
            if position is not None and len(node.args) > position:
                rule = node.args[position]
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Constant):
            rule = node.value  # _rule_for's "port range 1-65535"
        if isinstance(rule, ast.Constant) and isinstance(rule.value, str):
            rules.add(rule.value)
    return rules


def test_the_table_covers_every_rule_the_inventory_knows() -> None:
    """A new rule in the inventory package needs a case here too."""
    known = _rules_in_inventory_source()
    assert {"residency", "one on-site mirror", "duration", "port range 1-65535"} <= known
    covered = {case.rule for case in CASES + ID_CASES}
    covered |= {"YAML syntax", "document shape", "readable file"}  # tested below, not in the table
    covered |= {"file size", "no aliases", "unique keys"}  # tests/hostile/test_fleet_files.py
    assert known <= covered, f"rules without a case: {sorted(known - covered)}"


@pytest.mark.parametrize("hostile", ["a;rm -rf /", "../x", "A B"])
def test_hostile_ids_never_reach_the_fleet(hostile: str) -> None:
    for where, _ in ID_FIELDS:
        _, _, _, violations = check(put(where, hostile))
        assert any(v.rule == ID_RULE for v in violations), where
        with pytest.raises(InventoryError):
            parse_fleet(dump(_mutated(put(where, hostile))))


def test_a_hostile_id_is_shown_escaped_not_raw() -> None:
    _, _, _, violations = check(put("servers[app-jhb1-1].id", "\x1b[2Jevil"))
    (bad,) = [v for v in violations if v.rule == ID_RULE]
    assert bad.path == "servers[0].id"
    assert "\x1b" not in str(bad)
    assert "\\x1b" in bad.message


def _mutated(mutation: Mutation) -> Doc:
    doc = example()
    mutation(doc)
    return doc


# ----------------------------------------------------------------------------- valid forms


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("90s", 90), ("3m", 180), ("1h", 3600), ("1d", 86400), (180, 180), ("45", 45), ("2m ", 120)],
)
def test_durations_accept_seconds_and_suffixes(written: Any, seconds: int) -> None:
    _, _, fleet, violations = check(put("timing.outage_threshold", written))
    assert violations == []
    assert fleet is not None
    assert fleet.timing.outage_threshold == seconds


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("people[sipho].sms", "+447700900003"),
        ("people[sipho].sms", "+1234567"),
        ("people[sipho].email", "first.last+dr@sub.ppo.example"),
        ("clients[acme-mining].url", "http://127.0.0.1:8080/acme"),
        ("clients[acme-mining].data_path", "clients/acme mining/ünïcode"),
        ("clients[acme-mining].data_path", "clients/acme-mining/"),
        ("servers[app-jhb1-1].ssh.port", 65535),
        ("servers[app-jhb1-1].ssh.port", 1),
        ("servers[app-jhb1-1].ssh.host", "127.0.0.1"),
        ("servers[app-jhb1-1].ssh.host", "[::1]"),
        ("servers[app-jhb1-1].ssh.host_key", "ecdsa-sha2-nistp256 AAAA comment@host"),
        ("servers[app-jhb1-1].data_root", "/srv/ppo/"),
        ("servers[app-jhb1-1].id", "a" * 63),
        ("store.url", "postgresql://ppo@db.ppo.example/ppo"),
        ("channels.email.api_key", {"env": "SENDGRID_API_KEY"}),
        ("timing.latency_budget_ms", 5000),
        ("timing.mirror_cron", "*/5 * * * *"),  # the 5-minute cadence, docs/repository.md
        ("timing.mirror_cron", "* * * * *"),  # the lab's compressed time
        ("timing.mirror_cron", "7,37 * * * *"),
        ("timing.latency_budget_ms", None),
        ("timing.vantages", [{"id": "direct"}, {"id": "eu", "proxy": "http://px.example:3128"}]),
    ],
)
def test_valid_values_pass(where: str, value: Any) -> None:
    mutation = put(where, value)
    if where == "servers[app-jhb1-1].id":  # keep its references pointing at it
        mutation = both(
            mutation,
            put("clients[acme-mining].server", value),
            put("clients[karoo-logistics].server", value),
        )
    _, _, fleet, violations = check(mutation)
    assert violations == [], "\n".join(map(str, violations))
    assert fleet is not None


def test_same_data_path_on_different_servers_is_fine() -> None:
    _, _, _, violations = check(put("clients[ubuntu-health].data_path", "clients/acme-mining"))
    assert violations == []


def test_clients_ab_and_a_do_not_overlap() -> None:
    _, _, _, violations = check(put("clients[karoo-logistics].data_path", "clients/acme-min"))
    assert violations == []


def test_residency_names_the_home_server_and_every_mirror() -> None:
    _, _, _, violations = check(put("clients[thames-advisory].countries", ["FR"]))
    messages = [v.message for v in violations if v.rule == "residency"]
    assert len(messages) == 3
    assert any("home server 'app-lon1-1'" in m for m in messages)
    assert any("mirror 'mirror-lon1-1'" in m for m in messages)
    assert any("mirror 'mirror-jhb1-1'" in m for m in messages)


def test_secrets_are_never_echoed() -> None:
    for mutation in [
        put("channels.email.api_key", "SG.sup3rs3cret"),
        put("store.url", "postgresql://ppo:sup3rs3cret@db/ppo"),
        put("clients[acme-mining].url", "ftp://admin:sup3rs3cret@acme.example/"),
        put("clients[acme-mining].url", "https://admin:sup3rs3cret@acme.example/"),
        put("data_centres[jhb1].secret_access_key", "sup3rs3cret"),
    ]:
        _, _, _, violations = check(mutation)
        assert violations
        assert not any("sup3rs3cret" in str(v) for v in violations)


# ----------------------------------------------------------------------------- YAML and shape


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("version: 1\nname: x\n  servers: []\n", 3),
        ("version: 1\nservers: [1, 2\nname: x\n", 3),
        ("version: 1\nname: x\n\tdata_centres: []\n", 3),
        ("name: x\n---\nname: y\n", 2),
        ("name: 'unterminated\n", 2),
    ],
)
def test_yaml_syntax_error_reports_its_line(text: str, line: int) -> None:
    fleet, violations = check_fleet_text(text, "f.yaml")
    assert fleet is None
    (violation,) = violations
    assert violation.rule == "YAML syntax"
    assert violation.line == line
    assert violation.message
    assert str(violation).startswith(f"f.yaml:{line}: ")


def test_yaml_syntax_error_in_the_example_reports_the_right_line() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    at = next(i for i, text in enumerate(lines) if text.startswith("servers:")) + 3
    lines.insert(at, "    dc: [jhb1")
    _, violations = check_fleet_text("\n".join(lines) + "\n")
    (violation,) = violations
    assert violation.rule == "YAML syntax"
    assert violation.line is not None
    assert at + 1 <= violation.line <= at + 2


def test_deeply_nested_yaml_is_a_violation_not_a_crash() -> None:
    fleet, violations = check_fleet_text("[" * 5000 + "]" * 5000)
    assert fleet is None
    assert [v.rule for v in violations] == ["YAML syntax"]


@pytest.mark.parametrize(
    ("text", "line"),
    [("- a\n- b\n", 1), ("just a string\n", 1), ("42\n", 1), ("", None), ("~\n", 1)],
)
def test_document_must_be_a_mapping(text: str, line: int | None) -> None:
    fleet, violations = check_fleet_text(text)
    assert fleet is None
    (violation,) = violations
    assert violation.rule == "document shape"
    assert violation.path == ""
    assert violation.line == line


def test_a_file_with_only_a_name_lists_the_missing_sections() -> None:
    _, violations = check_fleet_text("name: tiny\n")
    assert {(v.rule, v.path) for v in violations} >= {
        ("required field", "data_centres"),
        ("required field", "servers"),
    }


# ----------------------------------------------------------------------------- all at once

MANY = [
    (put("servers[app-jhb1-1].ssh.port", 0), "port range 1-65535", "servers[app-jhb1-1].ssh.port"),
    (put("servers[app-jhb1-2].ssh.host_key", "x"), "host key", "servers[app-jhb1-2].ssh.host_key"),
    (
        put("servers[app-cpt1-1].mirrors", ["mirror-cpt1-1"]),
        "off-site mirror",
        "servers[app-cpt1-1].mirrors",
    ),
    (put("servers[spare-lon1-1].dc", "par1"), "known reference", "servers[spare-lon1-1].dc"),
    (put("data_centres[cpt1].country", "za"), "country code", "data_centres[cpt1].country"),
    (
        put("clients[ubuntu-health].data_path", "../etc"),
        "relative path inside the data root",
        "clients[ubuntu-health].data_path",
    ),
    (
        put("clients[table-bay-fisheries].url", "ftp://tbf.example/"),
        "http(s) URL",
        "clients[table-bay-fisheries].url",
    ),
    (
        put("clients[thames-advisory].server", "spare-lon1-1"),
        "clients sit on app servers",
        "clients[thames-advisory].server",
    ),
    (put("people[anna].sms", "0820000002"), "E.164 phone number", "people[anna].sms"),
    (put("people[lindiwe].id", "Lindiwe K"), ID_RULE, "people[3].id"),
    (
        put("escalation.levels[1].notify", ["jmaes"]),
        "known reference",
        "escalation.levels[1].notify[0]",
    ),
    (put("timing.probe_interval", "soon"), "duration", "timing.probe_interval"),
    (put("channels.sms.region", DELETE), "required field", "channels.sms.region"),
    (put("colour", "red"), "unknown field", "colour"),
]


def test_every_violation_in_one_file_is_reported() -> None:
    doc, text, fleet, violations = check(both(*(mutation for mutation, _, _ in MANY)))
    assert fleet is None
    found = {(v.rule, v.path) for v in violations}
    for _, rule, path in MANY:
        assert (rule, path) in found, f"[{rule}] at {path} missing"
    # lindiwe's renaming also leaves level 3 notifying an unknown person: one more.
    expected = len(MANY) + 1
    assert len(violations) == expected, "\n".join(map(str, violations))
    assert ("known reference", "escalation.levels[2].notify[0]") in found
    for violation in violations:
        assert_line_shows(text, doc, violation.path, violation.line)


def test_a_bad_setting_does_not_hide_topology_problems() -> None:
    _, _, fleet, violations = check(
        both(put("timing.probe_interval", "soon"), put("clients[acme-mining].countries", ["GB"]))
    )
    assert fleet is None
    rules = [v.rule for v in violations]
    assert "duration" in rules
    assert "residency" in rules


def test_parse_fleet_raises_with_every_violation() -> None:
    doc = _mutated(both(*(mutation for mutation, _, _ in MANY)))
    with pytest.raises(InventoryError) as caught:
        parse_fleet(dump(doc), "bad.yaml")
    assert len(caught.value.violations) == len(MANY) + 1
    assert all(v.file == "bad.yaml" for v in caught.value.violations)
    assert f"{len(MANY) + 1} violation(s)" in str(caught.value)


# ----------------------------------------------------------------------------- no cascades


@pytest.mark.parametrize(
    ("mutation", "rule", "path"),
    [
        # an invalid app server: its clients are not "on an unknown server"
        (
            put("servers[app-jhb1-1].ssh.port", 0),
            "port range 1-65535",
            "servers[app-jhb1-1].ssh.port",
        ),
        (put("servers[app-jhb1-1].role", "db"), "allowed values", "servers[app-jhb1-1].role"),
        # an invalid mirror server: the app servers' mirror rules stay quiet
        (
            put("servers[mirror-jhb1-1].ssh.host_key", "nope"),
            "host key",
            "servers[mirror-jhb1-1].ssh.host_key",
        ),
        # an invalid data centre: its servers do not sit in an "unknown data centre"
        (put("data_centres[jhb1].country", "za"), "country code", "data_centres[jhb1].country"),
        # an invalid person: the escalation does not notify an "unknown person"
        (put("people[james].sms", "call me"), "E.164 phone number", "people[james].sms"),
    ],
)
def test_an_invalid_item_does_not_cascade(mutation: Mutation, rule: str, path: str) -> None:
    _, _, _, violations = check(mutation)
    assert [(v.rule, v.path) for v in violations] == [(rule, path)]


# ----------------------------------------------------------------------------- files


def test_load_fleet_reports_the_file_and_lines(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text(dump(_mutated(put("servers[app-jhb1-1].ssh.port", 0))), encoding="utf-8")
    with pytest.raises(InventoryError) as caught:
        load_fleet(bad)
    (violation,) = caught.value.violations
    assert violation.file == str(bad)
    assert violation.path == "servers[app-jhb1-1].ssh.port"
    assert violation.line is not None
    assert "port:" in bad.read_text(encoding="utf-8").splitlines()[violation.line - 1]


def test_load_fleet_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as caught:
        load_fleet(tmp_path / "nope.yaml")
    (violation,) = caught.value.violations
    assert violation.rule == "readable file"
    assert "No such file" in violation.message


def test_load_fleet_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(InventoryError) as caught:
        load_fleet(bad)
    (violation,) = caught.value.violations
    assert violation.rule == "readable file"
    assert "utf-8" in violation.message


def test_load_fleet_directory(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as caught:
        load_fleet(tmp_path)
    assert [v.rule for v in caught.value.violations] == ["readable file"]


# ----------------------------------------------------------------------------- summary


def test_summary_lists_dcs_roles_clients_and_mirrors() -> None:
    text = summary(load_fleet(EXAMPLE))
    assert "fleet ppo-prod: 3 data centres, 9 servers, 5 clients" in text
    assert "jhb1 (ZA, aws): 2 app, 1 mirror, 1 spare" in text
    assert "lon1 (GB, aws): 1 app, 1 mirror, 1 spare" in text
    assert (
        "app-jhb1-1 [jhb1] 2/40 clients; on-site mirror-jhb1-1; off-site mirror-cpt1-1 (cpt1)"
        in text
    )
    assert (
        "app-cpt1-1 [cpt1] 1/40 clients; on-site mirror-cpt1-1; off-site mirror-jhb1-1 (jhb1)"
        in text
    )
    assert (
        "app-lon1-1 [lon1] 1/40 clients; on-site mirror-lon1-1; off-site mirror-jhb1-1 (jhb1)"
        in text
    )
    assert "spares: spare-jhb1-1, spare-lon1-1" in text


def test_summary_lists_several_offsite_mirrors() -> None:
    _, _, fleet, violations = check(
        put("servers[app-lon1-1].mirrors", ["mirror-lon1-1", "mirror-jhb1-1", "mirror-cpt1-1"])
    )
    assert violations == []
    assert fleet is not None
    assert "off-site mirror-jhb1-1 (jhb1), mirror-cpt1-1 (cpt1)" in summary(fleet)


def test_fleet_lookups() -> None:
    fleet = load_fleet(EXAMPLE)
    assert fleet.onsite_mirror("app-jhb1-1").id == "mirror-jhb1-1"
    assert [m.id for m in fleet.offsite_mirrors("app-jhb1-1")] == ["mirror-cpt1-1"]
    assert fleet.country_of("app-lon1-1") == "GB"
    assert [c.id for c in fleet.clients_on("app-jhb1-1")] == ["acme-mining", "karoo-logistics"]
    assert {s.id for s in fleet.servers_by_role("spare")} == {"spare-jhb1-1", "spare-lon1-1"}
    assert fleet.channels.email.api_key is not None
    assert fleet.channels.email.api_key.describe() == "block:sendgrid-api-key"
    with pytest.raises(KeyError):
        fleet.server("nope")


def test_access_key_file_is_relative_to_the_fleet_file(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["access"] = {"key_file": "keys/operator_ed25519"}
    target = tmp_path / "fleet.yaml"
    target.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_fleet(target).access.key_file == str(tmp_path / "keys" / "operator_ed25519")


def _s3_example_block() -> str:
    """The commented S3 mirror of examples/fleet.yaml, uncommented."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# - id: mirror-s3-af1")
    block = []
    for line in lines[start:]:
        if not line.strip().startswith("#"):
            break
        block.append(line.replace("# ", "", 1))
    return "\n".join(block)


def test_the_commented_s3_mirror_of_the_example_is_valid() -> None:
    """The example tells operators how to declare an S3 mirror: it must stay valid."""
    (server,) = yaml.safe_load(_s3_example_block())
    _, _, fleet, violations = check(
        both(
            append("servers", server),
            put("servers[app-cpt1-1].mirrors", ["mirror-cpt1-1", "mirror-jhb1-1", "mirror-s3-af1"]),
        )
    )
    assert violations == [], "\n".join(map(str, violations))
    assert fleet is not None
    mirror = fleet.server("mirror-s3-af1")
    assert mirror.ssh is None and mirror.s3 is not None
    assert (mirror.s3.bucket, mirror.s3.prefix, mirror.s3.region) == (
        "ppo-dr-mirror-af1",
        "prod",
        "af-south-1",
    )
    assert mirror.s3.access_key_id is not None
    assert mirror.s3.access_key_id.describe() == "block:ppo-dr-s3-key-id"
    assert [m.id for m in fleet.offsite_mirrors("app-cpt1-1")] == ["mirror-jhb1-1", "mirror-s3-af1"]


@pytest.mark.parametrize(
    ("prefix", "stored"), [("", ""), ("prod/", "prod"), ("ppo dr/prod-1", "ppo dr/prod-1")]
)
def test_s3_prefix_forms(prefix: str, stored: str) -> None:
    _, _, fleet, violations = check(
        both(
            append("servers", S3_MIRROR | {"s3": S3_SPEC | {"prefix": prefix}}),
            put("servers[app-cpt1-1].mirrors", ["mirror-cpt1-1", "mirror-s3-af1"]),
            put(f"{S3M}.s3.endpoint_url", "http://127.0.0.1:9000"),
        )
    )
    assert violations == [], "\n".join(map(str, violations))
    assert fleet is not None
    s3 = fleet.server("mirror-s3-af1").s3
    assert s3 is not None and s3.prefix == stored
