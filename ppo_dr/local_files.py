"""Writing a local file so readers see the old content or the new, never half of it.

One skeleton for every local writer that must not leave a torn file: write a private
temporary file, flush and fsync it, rename it over the final name, and remove the
temporary file if anything fails on the way.
"""

from __future__ import annotations

import os
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
