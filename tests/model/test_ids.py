"""Server-assigned ids: random version 4 UUIDs, never repeated, not shared with a fork."""

from __future__ import annotations

import os
import uuid

from fhir_server.model.ids import new_id, random_hex
from fhir_server.model.types import is_valid_id


def test_new_ids_are_version_4_uuids_and_valid_fhir_ids() -> None:
    for _ in range(600):  # more than one batch of pooled randomness
        id = new_id()
        parsed = uuid.UUID(id)
        assert str(parsed) == id
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert is_valid_id(id)


def test_new_ids_do_not_repeat() -> None:
    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_reuse_the_parents_ids() -> None:
    new_id()  # the pool now holds unused randomness
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != new_id()


def test_random_hex_is_128_fresh_bits() -> None:
    values = {random_hex() for _ in range(1000)}
    assert len(values) == 1000
    assert all(len(v) == 32 and int(v, 16) >= 0 for v in values)
