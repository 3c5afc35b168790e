"""``MANIFEST.sha256``: the hash of every file of an evidence bundle, and checking it.

The manifest is in ``sha256sum`` format (``<hex>  <path>``, one line per file, sorted
by path), so ``sha256sum -c MANIFEST.sha256`` checks a bundle without ppo-dr. The
*bundle hash* is the sha256 of the manifest's bytes: one value that covers every file,
recorded in the store when the bundle is written, so a bundle whose files *and*
manifest were rewritten still no longer matches.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ppo_dr.errors import PermanentError

MANIFEST: Final = "MANIFEST.sha256"
_LINE = re.compile(r"^([0-9a-f]{64})  (\S(?:.*\S)?)$")
_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class BundleCheck:
    """What ``evidence verify`` found: files added, removed or edited since the manifest."""

    bundle_hash: str
    files: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    edited: tuple[str, ...]

    @property
    def intact(self) -> bool:
        """True when every file is as the manifest says and nothing was added."""
        return not (self.added or self.removed or self.edited)


def file_sha256(path: Path) -> str:
    """The sha256 of *path*'s bytes, read in chunks; of a symbolic link, of where it
    points (a file swapped for a link is an edit, never followed out of the bundle)."""
    if path.is_symlink():
        return hashlib.sha256(b"symlink:" + str(path.readlink()).encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_files(directory: Path) -> Iterator[str]:
    """Every regular file under *directory* but the manifest, as POSIX relative paths."""
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if relative != MANIFEST and (path.is_symlink() or path.is_file()):
            yield relative


def manifest_text(hashes: Mapping[str, str]) -> str:
    """The manifest of *hashes* (relative path -> sha256), sorted by path."""
    return "".join(f"{hashes[name]}  {name}\n" for name in sorted(hashes))


def write_manifest(directory: Path) -> str:
    """Hash every file of *directory* into its manifest; return the bundle hash."""
    hashes = {name: file_sha256(directory / name) for name in bundle_files(directory)}
    data = manifest_text(hashes).encode("utf-8")
    (directory / MANIFEST).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def parse_manifest(text: str, where: str) -> dict[str, str]:
    """Relative path -> sha256 from a manifest's *text*; a malformed line is an error."""
    hashes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE.match(line)
        if match is None or match.group(2) in hashes:
            raise PermanentError(
                f"{where} line {number}: expected '<sha256>  <path>' once per file, got {line!r}"
            )
        hashes[match.group(2)] = match.group(1)
    return hashes


def check_bundle(directory: Path) -> BundleCheck:
    """Compare *directory* with its manifest. No manifest: :class:`PermanentError`."""
    path = directory / MANIFEST
    if not directory.is_dir():
        raise PermanentError(f"{directory} is not a directory")
    if not path.is_file():
        raise PermanentError(f"{directory} has no {MANIFEST}: not an evidence bundle")
    data = path.read_bytes()
    try:
        expected = parse_manifest(data.decode("utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise PermanentError(f"{path} is not UTF-8 text: {exc}") from None
    present = set(bundle_files(directory))
    edited = tuple(
        name
        for name in sorted(expected)
        if name in present and file_sha256(directory / name) != expected[name]
    )
    return BundleCheck(
        bundle_hash=hashlib.sha256(data).hexdigest(),
        files=len(expected),
        added=tuple(sorted(present - expected.keys())),
        removed=tuple(sorted(expected.keys() - present)),
        edited=edited,
    )
