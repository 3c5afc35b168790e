"""``ppo-dr db upgrade`` on a fresh PostgreSQL database, reached the way the
distributed lab's processes reach the store (a URL naming a libpq password file),
then a round trip through the store API from another connection pool."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from ppo_dr.store import Store
from ppo_dr.store.engine import head_revision
from tests.cli.entry import PPO_DR, ROOT
from tests.ppo_dr.test_store import POSTGRES_URL, _fresh_postgres_database

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="set PPO_DR_TEST_POSTGRES_URL=postgresql://..."),
]


@pytest.fixture
def passfile_url(tmp_path: Path) -> Iterator[str]:
    """A fresh database's URL without its password, which sits in a 0600 passfile."""
    assert POSTGRES_URL is not None
    for url in _fresh_postgres_database(POSTGRES_URL):
        parsed = make_url(url)
        password = parsed.password
        assert password, "the test server's URL must carry a password"
        passfile = tmp_path / "pgpass"
        passfile.touch(mode=0o600)
        passfile.write_text(f"*:*:*:{parsed.username}:{password}\n")
        bare = parsed._replace(password=None).set(query={"passfile": str(passfile)})
        yield bare.render_as_string(hide_password=False)


def test_db_upgrade_on_fresh_postgres_then_a_store_round_trip(
    passfile_url: str, tmp_path: Path
) -> None:
    url = passfile_url
    assert make_url(url).password is None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PPO_DR_", "PREFECT_"))}
    env.update(PPO_DR_DB_URL=url, PPO_DR_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [*PPO_DR, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"empty -> {head_revision()}" in done.stdout
    # The URL it names has no password at all, not even a masked one.
    assert done.stdout.startswith(f"store postgresql+psycopg://{make_url(url).username}@")

    again = subprocess.run(
        [*PPO_DR, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{head_revision()} -> {head_revision()}" in again.stdout

    with Store(url) as writer:
        assert writer.dialect == "postgresql"
        assert writer.seed_placements({"acme-mining": "app-jhb1-1"}) == 1
        moved = writer.move_client("acme-mining", "app-cpt1-1", expected_version=1, reason="test")
        incident, created = writer.open_incident(
            "dc", "dc:jhb1", "jhb1 lost", {"dc": "jhb1"}, paging=True
        )
        assert created
    with Store(url) as reader:
        placement = reader.placement("acme-mining")
        assert placement is not None
        assert (placement.server_id, placement.version) == ("app-cpt1-1", moved.version)
        assert [i.id for i in reader.incidents()] == [incident.id]
        assert ":***@" not in reader.url
