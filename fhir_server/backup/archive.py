"""The backup archive format: encrypted, integrity-checked, streamed.

    MAGIC | header length (4 bytes, big-endian) | header (JSON) | chunk | chunk | ...
    chunk = length (4 bytes) | nonce (12 bytes) | AES-256-GCM ciphertext and tag

The header says when the backup started, the archive's id and its key, wrapped by the key
ring's key-encryption key (a KeyProvider: the archive key never appears in the clear). Each
chunk's associated data is SHA-256(MAGIC, length, header) | chunk number | last-chunk flag: a
header changed, a chunk changed, moved, dropped or added, or the archive cut short all fail
to decrypt. The plaintext is JSON lines, one record each (backup/records.py).
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..crypto import KeyProvider, KeyRingError

MAGIC = b"FHIR-SERVER-BACKUP\n"
FORMAT = 1
CHUNK_BYTES = 1 << 20
_MAX_HEADER = 1 << 16
_MAX_CHUNK = CHUNK_BYTES + (1 << 20)  # a chunk holds whole records: one may pass the mark
_NONCE = 12
_LENGTH = struct.Struct(">I")


class ArchiveError(Exception):
    """Not an archive this server can restore: what is wrong, in words (never key bytes)."""


def _context(archive_id: str) -> bytes:
    return b"fhir-server backup " + archive_id.encode()


def _aad(base: bytes, index: int, last: bool) -> bytes:
    return base + struct.pack(">QB", index, last)


class ArchiveWriter:
    """Writes records to `file` under a fresh archive key wrapped by `provider`."""

    def __init__(self, file: BinaryIO, provider: KeyProvider, header: dict[str, Any]) -> None:
        key = AESGCM.generate_key(256)
        self._cipher = AESGCM(key)
        wrapped = provider.wrap(key, _context(header["archive"]))
        header = {**header, "format": FORMAT, "key": base64.b64encode(wrapped).decode(),
                  "kek": provider.kek_of(wrapped)}
        raw = orjson.dumps(header, option=orjson.OPT_SORT_KEYS)
        prefix = MAGIC + _LENGTH.pack(len(raw)) + raw
        file.write(prefix)
        self._file = file
        self._base = hashlib.sha256(prefix).digest()
        self._index = 0
        self._buffer: list[bytes] = []
        self._size = 0

    def add(self, record: list[Any]) -> None:
        """Add one record (a JSON array)."""
        line = orjson.dumps(record) + b"\n"
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= CHUNK_BYTES:
            self._flush(last=False)

    def close(self) -> None:
        """Write the last chunk (the archive is incomplete without it)."""
        self._flush(last=True)

    def _flush(self, last: bool) -> None:
        nonce = os.urandom(_NONCE)
        sealed = self._cipher.encrypt(nonce, b"".join(self._buffer), _aad(self._base, self._index, last))
        self._file.write(_LENGTH.pack(len(sealed)) + nonce + sealed)
        self._index += 1
        self._buffer, self._size = [], 0


def read_header(file: BinaryIO) -> tuple[dict[str, Any], bytes]:
    """(header, SHA-256 of everything before the first chunk); ArchiveError if it is not one."""
    if file.read(len(MAGIC)) != MAGIC:
        raise ArchiveError("not a fhir-server backup archive")
    (length,) = _LENGTH.unpack(_exactly(file, 4))
    if length > _MAX_HEADER:
        raise ArchiveError("the archive header is malformed")
    raw = _exactly(file, length)
    try:
        header = orjson.loads(raw)
        if header.get("format") != FORMAT:
            raise ArchiveError(f"archive format {header.get('format')!r} is not one this server reads")
    except (orjson.JSONDecodeError, AttributeError):
        raise ArchiveError("the archive header is malformed") from None
    return header, hashlib.sha256(MAGIC + _LENGTH.pack(length) + raw).digest()


def records(file: BinaryIO, provider: KeyProvider) -> Iterator[list[Any]]:
    """The records of the archive `file`, checked chunk by chunk; ArchiveError on the first
    sign of damage, or when this key ring cannot open its key (an archive of another
    server, or one whose key-encryption key was destroyed)."""
    header, base = read_header(file)
    try:
        key = provider.unwrap(base64.b64decode(header["key"]), _context(str(header["archive"])))
    except (KeyRingError, KeyError, ValueError, TypeError):
        raise ArchiveError(f"this key ring cannot open the archive's key (key-encryption key "
                           f"{header.get('kek')}): it was made by another server, or that "
                           "key was destroyed") from None
    cipher = AESGCM(key)
    index = 0
    while True:
        prefix = file.read(4)
        if not prefix:
            raise ArchiveError("the archive is cut short (its last chunk is missing)")
        (length,) = _LENGTH.unpack(_exactly(file, 4, prefix))
        if not _NONCE + 16 <= length + _NONCE <= _MAX_CHUNK + _NONCE:
            raise ArchiveError(f"chunk {index} of the archive is malformed")
        nonce = _exactly(file, _NONCE)
        sealed = _exactly(file, length)
        plain, last = _open(cipher, nonce, sealed, base, index)
        for line in plain.splitlines():
            yield orjson.loads(line)
        if last:
            if file.read(1):
                raise ArchiveError("the archive has data after its last chunk")
            return
        index += 1


def _open(cipher: AESGCM, nonce: bytes, sealed: bytes, base: bytes, index: int) -> tuple[bytes, bool]:
    for last in (False, True):
        try:
            return cipher.decrypt(nonce, sealed, _aad(base, index, last)), last
        except InvalidTag:
            continue
    raise ArchiveError(f"chunk {index} of the archive does not authenticate: the archive was "
                       "changed or damaged")


def _exactly(file: BinaryIO, count: int, start: bytes = b"") -> bytes:
    data = start + file.read(count - len(start))
    if len(data) != count:
        raise ArchiveError("the archive is cut short")
    return data
