"""The fleet/SLA page as a reader's browser shows it: every chart image decodes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from cli.main import app
from ppo_dr.store import Store
from tests.ppo_dr.test_fleet_sla import EXAMPLE, fill

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = pytest.mark.timeout(90)

#: naturalWidth of every <img> once all have finished loading (0 = broken image).
WIDTHS_JS = """
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
const check = () => imgs.every(i => i.complete)
  ? done(imgs.map(i => i.naturalWidth)) : setTimeout(check, 50);
check();
"""


def test_every_chart_of_the_fleet_report_loads_in_chromium(
    browser: WebDriver, tmp_path: Path
) -> None:
    with Store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        store.upgrade()
        fill(store)
        env = {"PPO_DR_DB_URL": store.url, "PPO_DR_FLEET": str(EXAMPLE)}
        out = tmp_path / "fleet.html"
        args = ["report", "fleet", "--from", "2026-11-01", "--to", "2026-11-30", "-o", str(out)]
        done = CliRunner().invoke(app, args, env=env)
    assert done.exit_code == 0, done.output
    browser.set_script_timeout(30)
    browser.get(out.as_uri())
    assert "acme-mining" in browser.page_source
    widths = browser.execute_async_script(WIDTHS_JS)
    assert len(widths) == 7, widths  # every chart has data in this month
    assert all(w > 0 for w in widths), f"a chart did not load: widths {widths}"
