"""Writing a local file so readers see the old content or the new, never half of it.

One skeleton for every local writer that must not leave a torn file: write a private
temporary file, flush and fsync it, rename it over the final name, and remove the
temporary file if anything fails on the way. :func:`replace_with` is told the
temporary name; :func:`write_atomically` picks a unique one beside the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_with(
    final: Path, temp: Path, data: bytes, *, mode: int = 0o666, exclusive: bool = True
) -> None:
    """Write *data* to *temp* (created with *mode*, less the umask), fsync it and rename
    it over *final*. *exclusive* refuses a *temp* that already exists (a name made to be
    unique); otherwise an existing one is truncated. *temp* is gone on any failure."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(temp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temp.replace(final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: bytes, *, mode: int = 0o644, fsync: bool = False) -> None:
    """Replace *path* with *data* through a uniquely named temporary file beside it,
    given exactly *mode* (the umask aside) before any byte is written.

    The rename alone survives a crash of this process (even ``kill -9``); *fsync* also
    survives a crash of the machine, at a cost of milliseconds per call. The temporary
    file is gone on any failure, and *path* keeps its old content.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
