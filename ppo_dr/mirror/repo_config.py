"""config.json: how to read a mirror repository, and opening its codec with a key.

Versions: 1 (manifests list every path) and 2 (manifests name tree objects) are both
read; a writer marks a version 1 repository as version 2 before it adds a version 2
manifest, so an older ppo-dr refuses it with a clear error instead of misreading it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ppo_dr.mirror.codec import Codec, key_check
from ppo_dr.mirror.errors import RepositoryError, WrongKeyError

REPO_FORMAT = "ppo-dr-mirror"
REPO_VERSION = 2  # 2: manifests name tree objects; 1: manifests list every path
READABLE_REPO_VERSIONS = (1, 2)


@dataclass(frozen=True)
class RepoConfig:
    """config.json: how to read this repository. Never holds the key."""

    app_server: str
    compression: str
    encryption: dict[str, str] | None
    chunker: dict[str, Any]
    created: str
    pack_target_bytes: int
    version: int = REPO_VERSION

    def to_bytes(self) -> bytes:
        doc = {
            "format": REPO_FORMAT,
            "version": self.version,
            "app_server": self.app_server,
            "created": self.created,
            "hash": "sha256" if self.encryption is None else "hmac-sha256",
            "chunker": self.chunker,
            "pack_target_bytes": self.pack_target_bytes,
            "compression": self.compression,
            "encryption": self.encryption,
        }
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> RepoConfig:
        try:
            doc = json.loads(data)
            version = doc.get("version")
            if doc.get("format") != REPO_FORMAT or version not in READABLE_REPO_VERSIONS:
                raise RepositoryError(
                    f"{where}: not a {REPO_FORMAT} repository of a version this reads "
                    f"{READABLE_REPO_VERSIONS} (format {doc.get('format')!r} version {version!r})"
                )
            return cls(
                app_server=str(doc["app_server"]),
                compression=str(doc["compression"]),
                encryption=doc.get("encryption"),
                chunker=dict(doc["chunker"]),
                created=str(doc.get("created", "")),
                pack_target_bytes=int(doc.get("pack_target_bytes", 0)),
                version=int(version),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RepositoryError(f"{where}: config.json unreadable ({exc})") from None


def codec_for(config: RepoConfig, key: bytes | None, where: str) -> Codec:
    """The codec for *config* if *key* is the right one; WrongKeyError otherwise."""
    enc = config.encryption
    if enc is None:
        if key is not None:
            raise WrongKeyError(f"{where}: repository is not encrypted but a key was given")
        return Codec(config.compression)
    if key is None:
        raise WrongKeyError(f"{where}: repository is encrypted (AES-256-GCM); no key given")
    codec = Codec(config.compression, key)
    if key_check(key, bytes.fromhex(enc["salt"])) != enc["key_check"]:
        raise WrongKeyError(f"{where}: the key given is not this repository's key")
    return codec
