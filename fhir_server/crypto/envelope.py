"""AES-256-GCM envelopes: the stored form of one encrypted resource version.

A blob is `format (1 byte) | key id (16 bytes) | nonce (12 bytes) | ciphertext and tag`. The
associated data binds it to where it is stored, `type/id/_history/version`, and to its header:
a blob copied onto another resource, another version, or relabelled with another key id fails
to open. A fresh random nonce per seal: 2^32 seals under one key keep the collision risk below
2^-32 (NIST SP 800-38D, 8.3), far more than one patient's compartment ever holds.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT = 1
KEY_ID_BYTES = 16
NONCE_BYTES = 12
HEADER_BYTES = 1 + KEY_ID_BYTES + NONCE_BYTES


class EnvelopeError(Exception):
    """A blob that is not an envelope of this format, or fails authentication (tampered,
    moved, or opened with the wrong key). Its message never holds blob or key bytes."""


def location(resource_type: str, id: str, version: int) -> bytes:
    """Where a version is stored, as the associated data names it."""
    return f"{resource_type}/{id}/_history/{version}".encode()


def is_envelope(blob: bytes) -> bool:
    """Whether `blob` starts like an envelope (stored JSON starts with `{`)."""
    return len(blob) > HEADER_BYTES and blob[0] == FORMAT


def key_id_of(blob: bytes) -> bytes:
    """The id of the data key that sealed `blob`."""
    if not is_envelope(blob):
        raise EnvelopeError("not an encrypted body of a known format")
    return blob[1:1 + KEY_ID_BYTES]


def seal(cipher: AESGCM, key_id: bytes, where: bytes, plaintext: bytes) -> bytes:
    """Encrypt `plaintext` stored at `where` under `cipher` (the data key `key_id`)."""
    header = bytes((FORMAT,)) + key_id + os.urandom(NONCE_BYTES)
    return header + cipher.encrypt(header[1 + KEY_ID_BYTES:], plaintext, where + header)


def open_envelope(cipher: AESGCM, where: bytes, blob: bytes) -> bytes:
    """The plaintext of `blob` stored at `where`; EnvelopeError if it does not authenticate."""
    if not is_envelope(blob):
        raise EnvelopeError("not an encrypted body of a known format")
    header = blob[:HEADER_BYTES]
    try:
        return cipher.decrypt(header[1 + KEY_ID_BYTES:], blob[HEADER_BYTES:], where + header)
    except InvalidTag:
        raise EnvelopeError("the encrypted body does not authenticate at this location") from None
