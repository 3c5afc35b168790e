"""How bytes become stored bytes: blob ids, zstd compression, AES-256-GCM sealing.

Why these choices (figures in PERF-NOTES.md):

- Blob id = sha256 of the plaintext, or HMAC-SHA256 under a key derived from the
  repository key when encryption is on, so ids on the mirror do not reveal which
  well-known contents (a stock file, an empty file) a client stores.
- zstd level 1, and only when it pays: a blob is stored compressed only if that
  saves at least 1/8 of it, so incompressible data costs one fast trial, not a
  decompression on every restore.
- AES-256-GCM with a fresh 96-bit nonce: ``nonce || ciphertext || tag``. The sub-keys
  come from the caller's key with HMAC-SHA256 (stdlib), so an operator can derive them
  by hand (docs/repository.md).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from dataclasses import dataclass

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppo_dr.mirror.errors import DamagedDataError, WrongKeyError

NONCE_BYTES = 12
MIN_KEY_BYTES = 32
COMPRESS_MIN_BYTES = 512
ZSTD_LEVEL = 1
DOCUMENT_ZSTD_LEVEL = 3
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMPRESSION_MODES = ("auto", "zstd", "none")
_ENC_INFO = b"ppo-dr mirror encryption key"
_ID_INFO = b"ppo-dr mirror blob id key"
_CHECK_INFO = b"ppo-dr mirror key check"
_local = threading.local()


def derive(key: bytes, info: bytes) -> bytes:
    """A 32-byte sub-key: HMAC-SHA256(key, info)."""
    return hmac.new(key, info, hashlib.sha256).digest()


def key_check(key: bytes, salt: bytes) -> str:
    """What config.json stores to recognise the right key (reveals nothing about it)."""
    return hmac.new(derive(key, _CHECK_INFO), salt, hashlib.sha256).hexdigest()


def _zstd_c() -> zstandard.ZstdCompressor:
    comp = getattr(_local, "c", None)
    if comp is None:
        comp = _local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return comp


def _zstd_d() -> zstandard.ZstdDecompressor:
    dec = getattr(_local, "d", None)
    if dec is None:
        dec = _local.d = zstandard.ZstdDecompressor()
    return dec


@dataclass(frozen=True)
class Codec:
    """Ids, compression and encryption for one repository (key or no key)."""

    compression: str = "auto"
    key: bytes | None = None

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSION_MODES:
            raise ValueError(f"compression must be one of {COMPRESSION_MODES}")
        if self.key is not None and len(self.key) < MIN_KEY_BYTES:
            raise WrongKeyError(f"encryption key must be at least {MIN_KEY_BYTES} bytes")

    @property
    def encrypted(self) -> bool:
        return self.key is not None

    def _aead(self) -> AESGCM:
        assert self.key is not None
        cache = getattr(_local, "aead", None)
        if cache is None or cache[0] != self.key:
            cache = _local.aead = (self.key, AESGCM(derive(self.key, _ENC_INFO)))
        return cache[1]

    def blob_id(self, data: bytes | memoryview) -> str:
        """The content address of *data* (hex)."""
        if self.key is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(derive(self.key, _ID_INFO), data, hashlib.sha256).hexdigest()

    def seal(self, data: bytes | memoryview) -> bytes:
        """Encrypt *data* if the repository is encrypted; else return it as bytes."""
        if self.key is None:
            return bytes(data)
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead().encrypt(nonce, bytes(data), None)

    def unseal(self, data: bytes | memoryview, what: str) -> bytes:
        """Inverse of :meth:`seal`; DamagedDataError if authentication fails."""
        if self.key is None:
            return bytes(data)
        raw = bytes(data)
        try:
            return self._aead().decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], None)
        except InvalidTag:
            raise DamagedDataError(
                f"{what}: authentication failed (damaged, or another key)"
            ) from None

    def seal_document(self, text: bytes) -> bytes:
        """Stored form of an index file or manifest: always zstd (JSON of hex ids and
        names shrinks ~2.7x, and a manifest is re-sent on every run), then sealed."""
        return self.seal(zstandard.ZstdCompressor(level=DOCUMENT_ZSTD_LEVEL).compress(text))

    def open_document(self, stored: bytes, what: str) -> bytes:
        """Inverse of :meth:`seal_document`; DamagedDataError if it is not one."""
        payload = self.unseal(stored, what)
        if not payload.startswith(ZSTD_MAGIC):
            raise DamagedDataError(f"{what}: not a zstd frame (damaged)")
        try:
            return _zstd_d().decompress(payload)
        except zstandard.ZstdError as exc:
            raise DamagedDataError(f"{what}: zstd frame damaged ({exc})") from None

    def encode_blob(self, data: bytes | memoryview) -> tuple[bytes, bool]:
        """Stored form of a blob and whether it is zstd-compressed."""
        compressed = False
        payload: bytes | memoryview = data
        if self.compression != "none" and len(data) >= COMPRESS_MIN_BYTES:
            packed = _zstd_c().compress(data)
            if self.compression == "zstd" or len(packed) <= len(data) - len(data) // 8:
                payload, compressed = packed, True
        return self.seal(payload), compressed

    def decode_blob(
        self, stored: bytes | memoryview, compressed: bool, raw_length: int, what: str
    ) -> bytes:
        """Plaintext of a stored blob; DamagedDataError if it cannot be decoded."""
        payload = self.unseal(stored, what)
        if not compressed:
            return payload
        try:
            return _zstd_d().decompress(payload, max_output_size=raw_length)
        except zstandard.ZstdError as exc:
            raise DamagedDataError(f"{what}: zstd frame damaged ({exc})") from None
