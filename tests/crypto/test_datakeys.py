"""Data keys: random per scope, stored wrapped, destroyable, re-wrapped on KEK rotation."""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from fhir_server import clock
from fhir_server.app import body_codec
from fhir_server.crypto import datakeys
from fhir_server.crypto import (DataKeys, EnvelopeCodec, KeyRingError, LocalKeyRing, UnreadableBody,
                                create_key_ring, key_scope, patient_scope)
from fhir_server.crypto.datakeys import CIPHERS
from fhir_server.settings import Settings


@pytest.fixture
def keys(tmp_path: Path) -> DataKeys:
    create_key_ring(tmp_path / "keyring.json")
    return DataKeys(LocalKeyRing(tmp_path / "keyring.json"), tmp_path / "datakeys.db", cache_size=2)


def test_one_random_key_per_scope_stored_wrapped(keys: DataKeys, tmp_path: Path) -> None:
    a_id, a = keys.current(patient_scope("a"))
    b_id, _ = keys.current(patient_scope("b"))
    assert a_id != b_id and keys.current(patient_scope("a"))[0] == a_id
    stored = (tmp_path / "datakeys.db").read_bytes() + (tmp_path / "datakeys.db-wal").read_bytes()
    assert patient_scope("a").encode() in stored  # the scope is there ...
    other = DataKeys(keys.provider, tmp_path / "datakeys.db")
    assert other.current(patient_scope("a"))[0] == a_id  # ... and the same key, unwrapped again


def test_scope_rule() -> None:
    assert key_scope("Observation", {"b", "a"}) == "Patient/a"
    assert key_scope("Patient", {"p"}) == "Patient/p"
    assert key_scope("Organization", set()) == "Organization"


def test_destroy_makes_the_scopes_ciphertext_unreadable(keys: DataKeys, tmp_path: Path) -> None:
    codec = EnvelopeCodec(keys)
    blob = codec.seal("Observation", "o1", 1, b'{"x":1}', {"a"})
    kept = codec.seal("Observation", "o2", 1, b'{"x":2}', {"b"})
    assert keys.destroy(patient_scope("a")) == 1
    assert keys.destroy(patient_scope("a")) == 0  # idempotent
    for fresh in (keys, DataKeys(keys.provider, tmp_path / "datakeys.db")):
        with pytest.raises(UnreadableBody, match="data key was destroyed"):
            EnvelopeCodec(fresh).open("Observation", "o1", 1, blob)
        assert EnvelopeCodec(fresh).open("Observation", "o2", 1, kept) == b'{"x":2}'


def test_a_destroy_elsewhere_reaches_this_process_cache(keys: DataKeys, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    blob = EnvelopeCodec(keys).seal("Patient", "a", 1, b"{}", {"a"})
    DataKeys(keys.provider, tmp_path / "datakeys.db").destroy(patient_scope("a"))
    monkeypatch.setattr("fhir_server.crypto.datakeys.RECHECK_SECONDS", 0.0)
    with pytest.raises(UnreadableBody):
        EnvelopeCodec(keys).open("Patient", "a", 1, blob)


def test_kek_rotation_rewraps_every_key_and_old_kek_can_go(keys: DataKeys) -> None:
    codec = EnvelopeCodec(keys)
    blobs = {p: codec.seal("Patient", p, 1, p.encode(), {p}) for p in "abcde"}
    old = keys.provider.status().active
    new = keys.provider.rotate()
    assert keys.status().by_kek == {old: 5}
    assert keys.rewrap(batch=2) == 2 and keys.rewrap(batch=10) == 3 and keys.rewrap() == 0
    assert keys.status().by_kek == {new: 5} and keys.verify() == []
    keys.provider.destroy(old)
    fresh = DataKeys(keys.provider, keys.path)
    assert all(EnvelopeCodec(fresh).open("Patient", p, 1, b) == p.encode() for p, b in blobs.items())


def test_prepare_makes_missing_keys_at_once_and_processes_agree(keys: DataKeys,
                                                                tmp_path: Path) -> None:
    other = DataKeys(keys.provider, keys.path)
    existing, _ = other.current(patient_scope("a"))
    keys.prepare([patient_scope(p) for p in "abc"])
    assert keys.current(patient_scope("a"))[0] == existing  # an existing key is kept
    assert {other.current(patient_scope(p))[0] for p in "bc"} == {
        keys.current(patient_scope(p))[0] for p in "bc"}
    assert keys.status().keys == 3


def test_a_batch_larger_than_the_cache_seals_without_loading_its_keys_again(
        keys: DataKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    scopes = [patient_scope(p) for p in "abcde"]  # the cache holds 2
    keys.prepare(scopes)
    loaded = {scope: keys.keys_of(scope)[0] for scope in scopes}
    queries: list[str] = []
    real = keys._query
    monkeypatch.setattr(keys, "_query", lambda sql, args=(): queries.append(sql) or real(sql, args))
    assert {scope: keys.current(scope)[0] for scope in scopes} == loaded
    assert queries == []  # no look-up of the file, no unwrap, for any of the batch's keys


def test_keys_held_for_a_batch_are_dropped_when_keys_change(keys: DataKeys, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    keys.prepare([patient_scope("a"), patient_scope("b")])
    a_id = keys.current(patient_scope("a"))[0]
    keys.destroy(patient_scope("a"))  # an erasure in this process
    assert keys.current(patient_scope("a"))[0] != a_id  # never seals under a destroyed key
    keys.prepare([patient_scope("b"), patient_scope("c")])
    c_id = keys.current(patient_scope("c"))[0]
    DataKeys(keys.provider, tmp_path / "datakeys.db").destroy(patient_scope("c"))  # elsewhere
    monkeypatch.setattr("fhir_server.crypto.datakeys.RECHECK_SECONDS", 0.0)
    assert keys.current(patient_scope("c"))[0] != c_id


def test_rotate_a_scope_keeps_the_old_key_retired_until_pruned(keys: DataKeys) -> None:
    codec = EnvelopeCodec(keys)
    old_blob = codec.seal("Patient", "a", 1, b"v1", {"a"})
    new_id = keys.rotate(patient_scope("a"))
    new_blob = codec.seal("Patient", "a", 2, b"v2", {"a"})
    assert new_blob[1:17] == new_id and codec.open("Patient", "a", 1, old_blob) == b"v1"
    assert keys.keys_of(patient_scope("a"))[0] == new_id
    assert keys.retire(patient_scope("a"), keep=new_id) == 1
    assert keys.keys_of(patient_scope("a")) == [new_id]
    # An older backup's version still opens: the retired key is kept for the retention.
    fresh = EnvelopeCodec(DataKeys(keys.provider, keys.path))
    assert fresh.open("Patient", "a", 1, old_blob) == b"v1"
    assert keys.prune(clock.now() - timedelta(days=30)) == (0, [])
    assert fresh.open("Patient", "a", 1, old_blob) == b"v1"
    assert keys.prune(clock.now() + timedelta(seconds=1)) == (1, [])
    with pytest.raises(UnreadableBody):
        EnvelopeCodec(DataKeys(keys.provider, keys.path)).open("Patient", "a", 1, old_blob)
    assert codec.open("Patient", "a", 2, new_blob) == b"v2"


def test_erasure_destroys_retired_keys_too(keys: DataKeys) -> None:
    codec = EnvelopeCodec(keys)
    old_blob = codec.seal("Patient", "a", 1, b"v1", {"a"})
    keys.retire(patient_scope("a"), keep=keys.rotate(patient_scope("a")))
    assert keys.destroy(patient_scope("a")) == 2
    with pytest.raises(UnreadableBody):
        EnvelopeCodec(DataKeys(keys.provider, keys.path)).open("Patient", "a", 1, old_blob)


def test_destroy_keys_again_by_id(keys: DataKeys) -> None:
    a_id, _ = keys.current(patient_scope("a"))
    b_id, _ = keys.current(patient_scope("b"))
    assert keys.destroy_keys([a_id, b"\0" * 16]) == 1
    assert keys.keys_of(patient_scope("a")) == [] and keys.keys_of(patient_scope("b")) == [b_id]


def test_retired_keks_open_until_pruned_after_the_retention(keys: DataKeys) -> None:
    codec = EnvelopeCodec(keys)
    blob = codec.seal("Patient", "a", 1, b"v1", {"a"})
    old = keys.provider.status().active
    archive_key = keys.provider.wrap(b"k" * 32, b"archive")  # an archive taken before
    new = keys.provider.rotate()
    while keys.rewrap():
        pass
    status = keys.provider.status()
    assert old in status.keks and list(status.retired) == [old]
    assert keys.provider.wrap(b"x" * 32, b"c")[1:9].hex() == new  # retired never wraps
    assert keys.prune(clock.now() - timedelta(days=30)) == (0, [])
    assert LocalKeyRing(keys.provider.path).unwrap(archive_key, b"archive") == b"k" * 32
    assert keys.prune(clock.now() + timedelta(seconds=1)) == (0, [old])
    with pytest.raises(KeyRingError):
        LocalKeyRing(keys.provider.path).unwrap(archive_key, b"archive")
    assert EnvelopeCodec(DataKeys(keys.provider, keys.path)).open("Patient", "a", 1, blob) == b"v1"


def test_a_retired_kek_still_wrapping_a_key_is_not_pruned(keys: DataKeys) -> None:
    keys.current(patient_scope("a"))
    old = keys.provider.status().active
    keys.provider.rotate()  # no re-wrap yet
    assert keys.prune(clock.now() + timedelta(seconds=1)) == (0, [])
    assert old in keys.provider.status().keks and keys.verify() == []


def test_a_page_of_bodies_has_its_keys_fetched_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    create_key_ring(tmp_path / "keyring.json")
    writer = EnvelopeCodec(DataKeys(LocalKeyRing(tmp_path / "keyring.json"), tmp_path / "datakeys.db"))
    blobs = [writer.seal("Observation", f"o{n}", 1, b'{"n":%d}' % n, {f"p{n}"}) for n in range(40)]
    reader = EnvelopeCodec(DataKeys(writer.keys.provider, tmp_path / "datakeys.db"))  # nothing cached
    queries: list[str] = []
    query = reader.keys._query
    monkeypatch.setattr(reader.keys, "_query", lambda sql, args=(): queries.append(sql) or query(sql, args))
    reader.ready([*blobs, b"{}"])  # a plaintext body among them is passed over
    assert len(queries) == 1
    assert [reader.open("Observation", f"o{n}", 1, blob) for n, blob in enumerate(blobs)] == \
        [b'{"n":%d}' % n for n in range(40)]
    assert len(queries) == 1  # every key came with the page's one query


def test_a_key_fetched_with_a_page_but_destroyed_is_still_reported_when_opened(keys: DataKeys) -> None:
    codec = EnvelopeCodec(keys)
    blob = codec.seal("Observation", "o1", 1, b"{}", {"a"})
    keys.destroy(patient_scope("a"))
    codec.ready([blob])  # not an error here: the body may never be opened
    with pytest.raises(UnreadableBody) as raised:
        codec.open("Observation", "o1", 1, blob)
    assert raised.value.destroyed


def _erase_a_at_next_unwrap(keys: DataKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Patient/a's keys destroyed (an erasure in another thread) just after `keys` read one."""
    unwrap = keys.provider.unwrap

    def erased_meanwhile(wrapped: bytes, key_id: bytes) -> bytes:
        key = unwrap(wrapped, key_id)
        monkeypatch.setattr(keys.provider, "unwrap", unwrap)
        keys.destroy(patient_scope("a"))
        return key

    monkeypatch.setattr(keys.provider, "unwrap", erased_meanwhile)


@pytest.mark.parametrize("reading", ["fetch", "cipher"])
def test_a_key_destroyed_while_it_is_read_is_not_cached(keys: DataKeys, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        reading: str) -> None:
    """An erasure in another thread destroys the key after the file was read and before the
    unwrapped copy is cached: that copy must not open the patient's bodies afterwards."""
    codec = EnvelopeCodec(keys)
    blob = codec.seal("Observation", "o1", 1, b"{}", {"a"})
    key_id = keys.keys_of(patient_scope("a"))[0]
    cold = DataKeys(keys.provider, tmp_path / "datakeys.db")  # nothing cached
    _erase_a_at_next_unwrap(cold, monkeypatch)
    if reading == "fetch":
        cold.fetch([key_id])
    else:
        cold.cipher(key_id)  # this read began before the erasure: it may still answer
    with pytest.raises(UnreadableBody) as raised:
        EnvelopeCodec(cold).open("Observation", "o1", 1, blob)
    assert raised.value.destroyed


def test_a_key_destroyed_while_it_is_loaded_to_seal_is_not_kept_current(
        keys: DataKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    destroyed = keys.current(patient_scope("a"))[0]
    cold = DataKeys(keys.provider, tmp_path / "datakeys.db")
    _erase_a_at_next_unwrap(cold, monkeypatch)
    cold.current(patient_scope("a"))  # began before the erasure
    assert cold.current(patient_scope("a"))[0] != destroyed  # later writes: a live key


def _unwraps_of_a_second_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: str,
                              patients: int) -> int:
    """Keys unwrapped when a server's codec (FHIR_SERVER_DATA_KEY_CACHE `size`) opens one
    body of each of `patients` patients a second time, as the re-match job's next pass does."""
    create_key_ring(tmp_path / "keyring.json")
    monkeypatch.setenv("FHIR_SERVER_DATA_KEY_CACHE", size)
    codec = body_codec(Settings(data_dir=tmp_path))
    blobs = {p: codec.seal("Patient", p, 1, b"{}", {p}) for p in map(str, range(patients))}
    codec = body_codec(Settings(data_dir=tmp_path))  # a new process: nothing cached yet
    for p, blob in blobs.items():
        codec.open("Patient", p, 1, blob)
    unwrapped: list[bytes] = []
    unwrap = codec.keys.provider.unwrap
    monkeypatch.setattr(codec.keys.provider, "unwrap", lambda w, k: unwrapped.append(k) or unwrap(w, k))
    for p, blob in blobs.items():
        assert codec.open("Patient", p, 1, blob) == b"{}"
    return len(unwrapped)


def test_the_cache_holds_as_many_keys_as_the_setting_says(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert _unwraps_of_a_second_pass(tmp_path / "large", monkeypatch, "20", 20) == 0
    # A cache smaller than the population is emptied by each pass: every key unwrapped again.
    assert _unwraps_of_a_second_pass(tmp_path / "small", monkeypatch, "10", 20) == 20


def test_the_default_cache_holds_a_population_of_100_000() -> None:
    assert Settings().data_key_cache >= 100_000


def test_cached_keys_add_nothing_the_cyclic_collector_walks(tmp_path: Path) -> None:
    # A cached cipher object is tracked by the collector: 100,000 of them made every full
    # collection of a server process walk 100,000 more objects (docs/security.md, "Cost");
    # only those of the last CIPHERS keys used are kept.
    create_key_ring(tmp_path / "keyring.json")
    keys = DataKeys(LocalKeyRing(tmp_path / "keyring.json"), tmp_path / "datakeys.db", cache_size=1000)
    keys.prepare(patient_scope(f"p{i}") for i in range(500))
    ids = [keys.current(patient_scope(f"p{i}"))[0] for i in range(500)]
    fresh = DataKeys(keys.provider, tmp_path / "datakeys.db", cache_size=1000)
    gc.collect()
    before = len(gc.get_objects())
    fresh.fetch(ids)
    for key_id in ids:
        fresh.cipher(key_id)
    gc.collect()
    assert len(gc.get_objects()) - before < CIPHERS + 50  # the ciphers of the keys used last
    blob = EnvelopeCodec(fresh).seal("Patient", "p1", 1, b"{}", {"p1"})
    assert EnvelopeCodec(keys).open("Patient", "p1", 1, blob) == b"{}"


def test_a_keys_cipher_is_made_once_while_it_is_in_use(keys: DataKeys,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A read opens its body, then its AuditEvent is sealed under the same key: the cipher
    made for the first use serves the next ones (docs/security.md#cost), until the key is
    one of more than CIPHERS used since, or keys change."""
    made: list[bytes] = []
    real = datakeys.AESGCM
    monkeypatch.setattr(datakeys, "AESGCM", lambda key: made.append(key) or real(key))
    codec = EnvelopeCodec(keys)
    blob = codec.seal("Patient", "p1", 1, b"{}", {"p1"})
    assert codec.open("Patient", "p1", 1, blob) == b"{}"
    codec.seal("AuditEvent", "e1", 1, b"{}", {"p1"})
    keys.prepare([patient_scope("p1")])
    codec.seal("AuditEvent", "e2", 1, b"{}", {"p1"})  # held for the batch: the same cipher
    assert len(made) == 1
    keys.rotate(patient_scope("p2"))  # keys changed: every cipher is made again
    assert codec.open("Patient", "p1", 1, blob) == b"{}"
    assert len(made) == 2


def test_no_more_ciphers_are_kept_than_keys(tmp_path: Path) -> None:
    """The cipher of a key holds its material: an operator's smaller key cache bounds them too."""
    create_key_ring(tmp_path / "keyring.json")
    keys = DataKeys(LocalKeyRing(tmp_path / "keyring.json"), tmp_path / "datakeys.db", cache_size=1)
    for n in range(5):
        keys.current(patient_scope(f"p{n}"))
    assert len(keys._ciphers) == 1


class _PausingClear(OrderedDict):  # type: ignore[type-arg]
    """A cache whose next clear() first runs `pause` (to stop a destroy half way through)."""

    pause: Callable[[], None] | None = None

    def clear(self) -> None:
        if self.pause is not None:
            pause, self.pause = self.pause, None
            pause()
        super().clear()


def test_a_key_destroyed_while_a_writer_seals_leaves_no_cipher(keys: DataKeys) -> None:
    """A writer thread asks for its scope's key while another destroys it, between the new
    revision and the clearing of what writers hold: it must not get (and cache the cipher of)
    the destroyed key."""
    scope = patient_scope("a")
    ready, go, got = threading.Event(), threading.Event(), {}

    def writer() -> None:
        keys.prepare([scope])  # its batch's keys held
        ready.set()
        go.wait()
        got["key"] = keys.current(scope)

    thread = threading.Thread(target=writer)
    thread.start()
    ready.wait()
    [old] = keys.keys_of(scope)
    paused = keys._keys = _PausingClear(keys._keys)

    def midway() -> None:
        go.set()
        thread.join(0.3)  # the writer, unless it waits for the destroy to end

    paused.pause = midway
    assert keys.destroy(scope) == 1
    thread.join()
    assert got["key"][0] != old
    assert old not in keys._ciphers
