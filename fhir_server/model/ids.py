"""Logical ids (FHIR R4 datatypes.html#id) and server-assigned ids."""

from __future__ import annotations

import os
import threading

# Random bytes are drawn from the OS this many ids at a time: one system call per id (what
# `uuid.uuid4()` makes) showed up as several per cent of a request's CPU under load.
_BATCH = 256
_pool = bytearray()
_lock = threading.Lock()


def _forget_pool() -> None:
    """A forked child must not hand out the ids its parent still holds."""
    global _pool
    _pool = bytearray()


os.register_at_fork(after_in_child=_forget_pool)


def _random16() -> bytearray:
    """16 bytes from the OS's CSPRNG (the same source as `uuid.uuid4()`), drawn in batches."""
    global _pool
    with _lock:
        if not _pool:
            _pool = bytearray(os.urandom(16 * _BATCH))
        raw = _pool[-16:]
        del _pool[-16:]
    return raw


def random_hex() -> str:
    """32 random hex digits (request ids)."""
    return _random16().hex()


def new_id() -> str:
    """A fresh server-assigned id: a random (version 4) UUID, so no information leaks from
    ids."""
    raw = _random16()
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
