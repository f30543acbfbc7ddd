"""The local key ring file: created 0600, refused when missing, malformed or too open."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fhir_server.crypto import KeyRingError, LocalKeyRing, create_key_ring


@pytest.fixture
def ring_path(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "keyring.json"
    create_key_ring(path)
    return path


def test_created_owner_only_and_never_overwritten(ring_path: Path) -> None:
    assert ring_path.stat().st_mode & 0o777 == 0o600
    before = ring_path.read_bytes()
    with pytest.raises(KeyRingError, match="already exists"):
        create_key_ring(ring_path)
    assert ring_path.read_bytes() == before


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match="does not exist.*keys init"):
        LocalKeyRing(tmp_path / "nowhere.json")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_readable_by_others(ring_path: Path, mode: int) -> None:
    os.chmod(ring_path, mode)
    with pytest.raises(KeyRingError, match="chmod 600"):
        LocalKeyRing(ring_path)


@pytest.mark.parametrize("content", [b"", b"not json", b"[]", b'{"format": 1}',
                                     b'{"format": 2, "active": "x", "keks": {}}'])
def test_malformed(ring_path: Path, content: bytes) -> None:
    ring_path.write_bytes(content)
    with pytest.raises(KeyRingError, match="malformed"):
        LocalKeyRing(ring_path)


def test_short_key_is_malformed(ring_path: Path) -> None:
    content = json.loads(ring_path.read_bytes())
    content["keks"][content["active"]] = "AAAA"
    ring_path.write_text(json.dumps(content))
    with pytest.raises(KeyRingError, match="malformed"):
        LocalKeyRing(ring_path)


def test_unreadable(tmp_path: Path) -> None:
    (tmp_path / "keyring.json").mkdir(mode=0o700)  # unreadable as a file, even by root
    with pytest.raises(KeyRingError, match="cannot be read"):
        LocalKeyRing(tmp_path / "keyring.json")


def test_wrap_binds_the_context_and_rotation_keeps_older_keys(ring_path: Path) -> None:
    ring = LocalKeyRing(ring_path)
    wrapped = ring.wrap(b"k" * 32, b"context-1")
    with pytest.raises(KeyRingError):
        ring.unwrap(wrapped, b"context-2")
    old = ring.status().active
    new = ring.rotate()
    assert ring.status().active == new and ring.kek_of(wrapped) == old
    assert ring.unwrap(wrapped, b"context-1") == b"k" * 32
    assert ring.kek_of(ring.wrap(b"k" * 32, b"c")) == new
    assert ring_path.stat().st_mode & 0o777 == 0o600
    ring.destroy(old)
    with pytest.raises(KeyRingError, match="not in the key ring"):
        ring.unwrap(wrapped, b"context-1")
    with pytest.raises(KeyRingError, match="active"):
        ring.destroy(new)


def test_another_process_rotation_is_picked_up(ring_path: Path) -> None:
    reader, rotator = LocalKeyRing(ring_path), LocalKeyRing(ring_path)
    rotator.rotate()
    assert reader.unwrap(rotator.wrap(b"k" * 32, b"c"), b"c") == b"k" * 32


def test_index_keys_are_per_parameter_and_stable(ring_path: Path) -> None:
    ring = LocalKeyRing(ring_path)
    name, family = ring.index_key("Patient.name"), ring.index_key("Patient.family")
    assert len(name) == 32 and name != family
    assert LocalKeyRing(ring_path).index_key("Patient.name") == name
    ring.rotate()  # a KEK rotation leaves blind indexes valid
    assert ring.index_key("Patient.name") == name
    assert name not in ring_path.read_bytes()


def test_a_process_wraps_under_the_kek_another_one_rotated_to(ring_path: Path) -> None:
    server, operator = LocalKeyRing(ring_path), LocalKeyRing(ring_path)
    new = operator.rotate()
    assert server.kek_of(server.wrap(b"k" * 32, b"c")) == new  # not the KEK it loaded first
