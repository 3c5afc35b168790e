"""Hard links within a client: found when a snapshot is taken, kept when it is restored.

SFTP reports no inode numbers, so a snapshot asks the app server once per client
with GNU ``find`` (one exec, any number of files) which files have more than one
name, and the manifest marks every later name of an inode as a ``link`` to its first
name in walk order. The restore then makes those names hard links of the first
(:mod:`ppo_dr.mirror.restore_remote`); a reader that ignores ``link`` still restores
every name as a copy, since each entry keeps its chunks.

A server without GNU ``find`` (or a lab server, whose exec has no ``find``) yields
no groups: its hard links are restored as copies, as before.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from ppo_dr.errors import DRError
from ppo_dr.mirror.manifest import Entry
from ppo_dr.transport.base import EntryType, Remote
from ppo_dr.transport.local import LocalRemote

log = logging.getLogger(__name__)

FIND_TIMEOUT_S = 120.0


def find_command(root: str) -> list[str]:
    """argv listing ``device inode path`` (NUL-ended) of every file below *root* with
    more than one name; paths relative to *root*, as raw bytes."""
    return ["find", root, "-type", "f", "-links", "+1", "-printf", r"%D %i %P\0"]


def parse_find_output(output: bytes) -> dict[str, str]:
    """``path -> inode key`` from :func:`find_command`'s output; malformed records are
    skipped (a name cannot hold NUL, so records never run together)."""
    groups: dict[str, str] = {}
    for record in output.split(b"\0"):
        device, _, rest = record.partition(b" ")
        inode, _, path = rest.partition(b" ")
        if device.isdigit() and inode.isdigit() and path:
            groups[os.fsdecode(path)] = f"{device.decode()}:{inode.decode()}"
    return groups


def hard_link_groups(source: Remote, root: str) -> dict[str, str]:
    """Which files below *root* on *source* share an inode (``path -> inode key``);
    empty if the server cannot tell us (no GNU find, exec refused, an error)."""
    if isinstance(source, LocalRemote) and source.root is not None:
        return {}  # its paths are not the machine's: find would look elsewhere
    try:
        result = source.exec(find_command(root), FIND_TIMEOUT_S)
    except DRError as exc:
        log.info("hard links under %s not detected: %s", root, exc)
        return {}
    if not result.ok:
        log.info("hard links under %s not detected: find exited %d", root, result.exit_status)
        return {}
    return parse_find_output(result.stdout)


def mark_hard_links(entries: list[Entry], groups: dict[str, str]) -> list[Entry]:
    """*entries* with every later file name of an inode marked as a link to its first."""
    if not groups:
        return entries
    first: dict[str, str] = {}
    marked: list[Entry] = []
    for entry in entries:
        key = groups.get(entry.path) if entry.type is EntryType.FILE else None
        if key is not None and key in first:
            entry = dataclasses.replace(entry, link=first[key])
        elif key is not None:
            first[key] = entry.path
        marked.append(entry)
    return marked
