"""The rules between items of a fleet: unique ids and endpoints, known references,
one on-site and an off-site mirror per app server, residency, capacity, reachable
people, channel settings. Each problem names its place in the file and its rule."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

from ppo_dr.inventory.model import SECTIONS, Fleet, Server

Problem = tuple[tuple[str | int, ...], str, str]


def _index(data: dict[str, Any], section: str, item_id: str) -> int:
    for i, item in enumerate(data.get(section) or []):
        if isinstance(item, dict) and item.get("id") == item_id:
            return i
    return 0


def topology_problems(fleet: Fleet, data: dict[str, Any]) -> Iterator[Problem]:
    """Every cross-item rule: uniqueness, references, mirrors, residency, capacity."""

    def at(section: str, item_id: str, *rest: str | int) -> tuple[str | int, ...]:
        return (section, _index(data, section, item_id), *rest)

    for section in SECTIONS:
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
        for section in SECTIONS
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
    for kind, channel in (("email", ch.email), ("sms", ch.sms), ("x", ch.x)):
        if channel.endpoint_url is not None and channel.provider == "outbox":
            yield (
                ("channels", kind, "endpoint_url"),
                "endpoint for a provider",
                "endpoint_url replaces a provider's API host; the outbox has none",
            )


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


# --------------------------------------------------------------------------- summary


def _a(word: str) -> str:
    """'an app', 'a mirror': messages an operator reads should read right."""
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"
