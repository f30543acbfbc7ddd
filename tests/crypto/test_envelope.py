"""AES-256-GCM envelopes: bound to their location and header, fresh nonce per seal."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fhir_server.crypto.envelope import (HEADER_BYTES, EnvelopeError, key_id_of, location,
                                         open_envelope, seal)

KEY_ID = bytes(range(16))
HERE = location("Patient", "p1", 2)


@pytest.fixture
def cipher() -> AESGCM:
    return AESGCM(os.urandom(32))


def test_round_trip_and_header(cipher: AESGCM) -> None:
    blob = seal(cipher, KEY_ID, HERE, b'{"resourceType":"Patient"}')
    assert blob[0] == 1 and key_id_of(blob) == KEY_ID
    assert b"Patient" not in blob[HEADER_BYTES:]
    assert open_envelope(cipher, HERE, blob) == b'{"resourceType":"Patient"}'


def test_each_seal_has_a_fresh_nonce(cipher: AESGCM) -> None:
    assert seal(cipher, KEY_ID, HERE, b"{}") != seal(cipher, KEY_ID, HERE, b"{}")


@pytest.mark.parametrize("elsewhere", [location("Patient", "p2", 2), location("Patient", "p1", 1),
                                       location("Observation", "p1", 2)])
def test_a_blob_moved_to_another_resource_or_version_fails(cipher: AESGCM, elsewhere: bytes) -> None:
    blob = seal(cipher, KEY_ID, HERE, b"{}")
    with pytest.raises(EnvelopeError):
        open_envelope(cipher, elsewhere, blob)


def test_a_changed_byte_anywhere_fails(cipher: AESGCM) -> None:
    blob = seal(cipher, KEY_ID, HERE, b'{"name":"x"}')
    for index in range(len(blob)):
        tampered = bytearray(blob)
        tampered[index] ^= 1
        with pytest.raises(EnvelopeError):
            open_envelope(cipher, HERE, bytes(tampered))


def test_plain_json_is_not_an_envelope(cipher: AESGCM) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope(cipher, HERE, b'{"resourceType":"Patient","id":"p1"}')
