"""Canary secrets: every secret reference of the fleet holds a unique value, the
runbooks run for real, and afterwards no trace of any value is anywhere we keep things.

The fleet is ``examples/fleet.yaml`` on 127.0.0.1 with each reference an ``env:`` of a
canary: the SendGrid key, the SNS access key pair, the four X tokens, the store's URL,
the operator's SSH key and the mirror encryption key. SendGrid, SNS and X are the real
client libraries, reaching the vendors' hosts through the test's HTTPS proxy
(:mod:`tests.hostile.saas_proxy`), which proves the credentials were really sent.

The run: an outage incident escalates (SMS and e-mail to level 1, an X post, client
e-mails), an approved failover plan of it runs and fails at its first SSH connection
(the canary key is no key), its death is paged, the incident is acknowledged and
resolved from the CLI, and the resolved notices go out. Then every Prefect log, flow
and task run, artifact and the Prefect database file, the store (file and rows), the
state directory and this process's log records are searched for each canary, raw,
URL-encoded and base64-encoded: none may be found.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.settings import get_current_settings
from typer.testing import CliRunner

import flows.escalation as escalation_module
from cli.main import app
from flows.failover import failover
from ppo_dr.failover.plan import FleetState, Scope, Target, plan_failover
from ppo_dr.inventory import load_fleet
from tests.flows.escalation_env import EscalationEnv, escalation_env, wait_for
from tests.hostile.fleets import loopback_example
from tests.hostile.saas_proxy import SNS_HOST, Seen, saas_proxy
from tests.netguard import loopback_guard
from tests.ppo_dr.failover.fleets import NOW, mirrored

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(480)]

AFFECTED = ["acme-mining", "karoo-logistics"]
POLICY = {
    "levels": [{"name": "first line", "notify": ["sipho", "anna"], "ack_deadline": 60}],
    "repeat": 0,
    "ack_timeout": 300,
    "public_after": 1,
    "public_every": 600,
    "clients_after": 2,
}


def _canaries(tmp_path: Path) -> dict[str, str]:
    """A fresh value per secret reference, each unlike anything else in the run."""
    tag = secrets.token_hex(6)
    store_dir = tmp_path / f"cnry-store-{tag}"
    store_dir.mkdir()
    return {
        "CNRY_SENDGRID": f"SG.cnry-sendgrid-{tag}.{secrets.token_urlsafe(24)}",
        "CNRY_SNS_KEY_ID": f"AKIACNRY{secrets.token_hex(6).upper()}",
        "CNRY_SNS_SECRET": f"cnry/sns+secret/{secrets.token_urlsafe(24)}",
        "CNRY_X_CONSUMER_KEY": f"cnry-x-ck-{secrets.token_urlsafe(16)}",
        "CNRY_X_CONSUMER_SECRET": f"cnry-x-cs-{secrets.token_urlsafe(24)}",
        "CNRY_X_ACCESS_TOKEN": f"cnry-x-at-{secrets.token_urlsafe(16)}",
        "CNRY_X_TOKEN_SECRET": f"cnry-x-ts-{secrets.token_urlsafe(24)}",
        "CNRY_STORE_URL": f"sqlite:///{store_dir / 'state.db'}",
        "CNRY_SSH_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        f"cnry{secrets.token_urlsafe(48)}\n-----END OPENSSH PRIVATE KEY-----\n",
        "CNRY_MIRROR_KEY": secrets.token_hex(32),
    }


def _fleet(tmp_path: Path) -> Path:
    """The example fleet with every secret reference an ``env:`` of a canary."""
    doc = loopback_example()
    doc["access"] = {"key_secret": {"env": "CNRY_SSH_KEY"}}
    doc["store"] = {"url_secret": {"env": "CNRY_STORE_URL"}}
    doc["mirror"]["encryption_key"] = {"env": "CNRY_MIRROR_KEY"}
    doc["channels"] = {
        "outbox": str(tmp_path / "home" / "outbox.jsonl"),
        "email": {"provider": "sendgrid", "sender": "noc@ppo.example",
                  "api_key": {"env": "CNRY_SENDGRID"}},
        "sms": {"provider": "sns", "region": "af-south-1",
                "access_key_id": {"env": "CNRY_SNS_KEY_ID"},
                "secret_access_key": {"env": "CNRY_SNS_SECRET"}},
        "x": {"provider": "x", "consumer_key": {"env": "CNRY_X_CONSUMER_KEY"},
              "consumer_secret": {"env": "CNRY_X_CONSUMER_SECRET"},
              "access_token": {"env": "CNRY_X_ACCESS_TOKEN"},
              "access_token_secret": {"env": "CNRY_X_TOKEN_SECRET"}},
    }  # fmt: skip
    doc["escalation"] = POLICY
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _forms(value: str) -> set[str]:
    """*value* as it could be written down: raw, URL-encoded, base64 at any alignment."""
    raw = value.encode()
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * pad + raw).decode()
            forms.add(encoded[4 : -4 if len(encoded) > 12 else None])
    return {f for f in forms if len(f) >= 12}


class Env(EscalationEnv):
    def open(self) -> int:
        incident, _ = self.store.open_incident(
            "outage", "server/app-jhb1-1", "app server app-jhb1-1 down (2 clients)",
            {"server": "app-jhb1-1", "dc": "jhb1", "clients": AFFECTED},
        )  # fmt: skip
        return incident.id


@pytest.fixture
def env(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Env, dict[str, str], Seen]]:
    canaries = _canaries(tmp_path)
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PPO_DR_DB_URL", raising=False)  # the store comes from its secret
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)  # for the CLI's ack
    monkeypatch.setattr(escalation_module, "RECHECK_S", 2)
    fleet_file = _fleet(tmp_path)
    monkeypatch.setenv("PPO_DR_FLEET", str(fleet_file))
    with loopback_guard(monkeypatch), saas_proxy(tmp_path, monkeypatch) as seen:
        outbox = tmp_path / "home" / "outbox.jsonl"
        for made in escalation_env(fleet_file, outbox, canaries["CNRY_STORE_URL"], Env):
            yield made, canaries, seen


def _approved_plan(fleet_file: Path) -> str:
    fleet = load_fleet(fleet_file)
    state = FleetState(fleet=fleet, placements={}, snapshots=mirrored(fleet), now=NOW)
    return plan_failover(state, Scope(server="app-jhb1-1"), Target()).to_json()


async def _prefect_records() -> list[str]:
    """Every log, flow run, task run and artifact the API holds, as JSON text."""
    texts: list[str] = []
    async with get_client() as client:
        for read in (client.read_logs, client.read_flow_runs, client.read_task_runs,
                     client.read_artifacts):  # fmt: skip
            offset = 0
            while batch := await read(limit=200, offset=offset):  # type: ignore[operator]
                texts += [item.model_dump_json() for item in batch]
                offset += len(batch)
    return texts


def _files(*roots: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for root in roots for p in root.rglob("*") if p.is_file()]


def test_no_canary_secret_is_kept_anywhere(
    env: tuple[Env, dict[str, str], Seen], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    run, canaries, seen = env
    incident_id = run.open()
    run.start(incident_id=incident_id)
    wait_for("SMS, e-mail and an X post", lambda: {SNS_HOST, "api.sendgrid.com", "api.x.com"}
             <= seen.hosts() or {SNS_HOST, "api.sendgrid.com", "api.twitter.com"} <= seen.hosts(),
             timeout=60)  # fmt: skip
    state = failover(
        plan_json=_approved_plan(run.fleet_file),
        approve=True,
        incident_id=incident_id,
        fleet_file=run.fleet_file,
        return_state=True,
    )
    assert state.is_failed(), state
    ack = ["incident", "ack", str(incident_id), "--by", "anna"]
    assert CliRunner().invoke(app, ack).exit_code == 0
    assert (
        CliRunner().invoke(app, ["incident", "resolve", str(incident_id), "--by", "anna"]).exit_code
        == 0
    )
    for thread in run.threads:
        thread.join(timeout=60)

    # The credentials really went to the vendors (in the form each vendor takes them).
    sent = seen.text()
    for name in ("CNRY_SENDGRID", "CNRY_SNS_KEY_ID", "CNRY_X_CONSUMER_KEY", "CNRY_X_ACCESS_TOKEN"):
        assert canaries[name] in sent or urllib.parse.quote(canaries[name], safe="") in sent, name

    kept: list[tuple[str, str | bytes]] = [(f"prefect api {i}", t) for i, t in
                                           enumerate(asyncio.run(_prefect_records()))]  # fmt: skip
    database = get_current_settings().server.database.connection_url
    assert database is not None
    prefect_db = Path(database.get_secret_value().split(":///", 1)[1])
    kept += _files(prefect_db.parent)
    store_db = Path(canaries["CNRY_STORE_URL"].split(":///", 1)[1])
    # The operator's key is written for OpenSSH to read (its one place on disk): owner only.
    key_files = list((tmp_path / "home" / "fleet-access").rglob("operator_key*"))
    assert key_files and all(p.stat().st_mode & 0o077 == 0 for p in key_files)
    kept += [f for f in _files(store_db.parent, tmp_path / "home") if Path(f[0]) not in key_files]
    kept.append(("store rows", json.dumps([list(map(str, r)) for r in _rows(store_db)])))
    kept.append(("log records", caplog.text))
    assert any(name == str(store_db) for name, _ in kept)
    leaks = sorted(
        f"{name} in {where}"
        for name, value in canaries.items()
        for form in _forms(value)
        for where, text in kept
        if (form.encode() if isinstance(text, bytes) else form) in text
    )
    assert not leaks, leaks


def _rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        tables = [t for (t,) in conn.execute("select name from sqlite_master where type='table'")]
        return [row for t in tables for row in conn.execute(f'select * from "{t}"')]  # noqa: S608
