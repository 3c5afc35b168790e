"""A lab server's clock: the skew file is read when it changes, a broken or absurd one is
ignored, and a skewed server stamps the files it writes with its own time."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ppo_dr.lab.clock import ServerClock


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # a new inode: the watch sees it even within one mtime tick


def test_the_skew_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    clock = ServerClock(path)
    assert clock.skew_s == 0.0
    _write(path, json.dumps({"skew_s": 7200}))
    assert clock.skew_s == 7200.0
    assert abs(clock.now() - (time.time() + 7200)) < 5
    _write(path, json.dumps({"skew_s": -30.5}))
    assert clock.skew_s == -30.5
    path.unlink()
    assert clock.skew_s == 0.0


def test_a_broken_or_absurd_file_means_no_skew(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    clock = ServerClock(path)
    for text in ("not json", json.dumps({"skew": 5}), json.dumps({"skew_s": "x"}), "[]"):
        _write(path, text)
        assert clock.skew_s == 0.0, text
    _write(path, json.dumps({"skew_s": 10 * 366 * 86400}))
    assert clock.skew_s == 0.0
    assert ServerClock(None).skew_s == 0.0


def test_a_skewed_server_stamps_its_files_with_its_own_time(tmp_path: Path) -> None:
    written = tmp_path / "journal.log"
    written.write_text("x\n")
    before = written.stat().st_mtime
    ServerClock(None).stamp(written)
    assert written.stat().st_mtime == before  # no skew: the kernel's time stays
    path = tmp_path / "clock.json"
    _write(path, json.dumps({"skew_s": 7200}))
    ServerClock(path).stamp(written)
    assert abs(written.stat().st_mtime - (time.time() + 7200)) < 5
