"""The lab servers' ``tar -x``: the receiver a restore streams a client into.

A restore into a real server runs GNU ``tar --extract`` under a staging directory
(:mod:`ppo_dr.mirror.tar_stream`); a lab server has no tar and no shell, so it
accepts exactly that command line (:data:`~ppo_dr.mirror.tar_stream.TAR_EXTRACT`) and
extracts with :mod:`tarfile`, confined the way GNU tar is and stricter:

- the directory must exist inside the server's data root;
- a member name must be relative, normalised, without ``..``; its parent must
  resolve inside the directory (so no member is written through a symlink), and
  whatever non-directory already sits at its name is replaced, never written through;
- a hard link must name a regular file already extracted inside the directory;
- symlink targets are stored verbatim and never followed.

Metadata as GNU tar sets it: file modes with setgid and sticky bits, file and symlink
mtimes, directory modes and mtimes after all members (deepest first), sparse
members sparse.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from ppo_dr.errors import UnsafeInputError
from ppo_dr.mirror.manifest import path_problem

READ_SIZE: Final = 1 << 20


class StdinReader:
    """A command's stdin as a file object for :mod:`tarfile` (``read`` only).

    *read_some* returns up to n bytes, and b"" at end of input (the SSH server hands
    over the channel's data as it arrives).
    """

    def __init__(self, read_some: Callable[[int], bytes]) -> None:
        self._read_some = read_some

    def read(self, size: int = -1) -> bytes:
        return self._read_some(READ_SIZE if size < 0 else size)


def _refuse(name: str, why: str) -> UnsafeInputError:
    return UnsafeInputError(f"tar member {name!r} refused: {why}")


def _target(root: Path, name: str) -> Path:
    """Where member *name* goes under *root*; refused if it could land outside."""
    if name == ".":
        return root
    problem = path_problem(name)
    if problem is not None:
        raise _refuse(name, problem)
    path = root / name
    parent = Path(os.path.realpath(path.parent))
    if not (parent == root or parent.is_relative_to(root)):
        raise _refuse(name, "its directory leads outside the restore")
    return parent / path.name


def _clear(path: Path) -> None:
    """Remove a non-directory at *path* so nothing is written through it."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()


def extract(stream: StdinReader, root: Path) -> int:
    """Extract the tar *stream* under *root* (an existing directory); returns members."""
    root = Path(os.path.realpath(root))
    if not root.is_dir():
        raise UnsafeInputError(f"{root}: not a directory")
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    count = 0
    with tarfile.open(fileobj=stream, mode="r|", errors="surrogateescape") as archive:  # type: ignore[call-overload]
        for member in archive:
            count += 1
            target = _target(root, member.name)
            if member.isdir():
                target.mkdir(mode=0o700, parents=True, exist_ok=True)
                dirs.append((target, member))
                continue
            if target != root:
                _clear(target)
                target.parent.mkdir(parents=True, exist_ok=True)
            if member.islnk():
                source = _target(root, member.linkname)
                if not stat.S_ISREG(source.lstat().st_mode):
                    raise _refuse(member.name, "a hard link to something not a file")
                os.link(source, target, follow_symlinks=False)
            elif member.issym():
                target.symlink_to(member.linkname)
                os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
            elif member.isreg():
                archive.extract(member, root, filter="fully_trusted")
            else:
                raise _refuse(member.name, "not a file, directory or link")
    for path, member in sorted(dirs, key=lambda d: len(d[0].parts), reverse=True):
        path.chmod(member.mode)
        os.utime(path, (member.mtime, member.mtime))
    return count
