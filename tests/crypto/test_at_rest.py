"""What the files hold: ciphertext bodies, no marker of a patient in any form; a body moved
to another resource or version, or changed, fails to open (a 500 with an incident id, audited,
never blob or key bytes).

The clinical store's index tables still hold the plaintext values of the search parameters
(names, identifiers) until blind indexes replace them (docs/security.md): these tests check its
every stored body and outbox record, and every other file of the data directory whole; the
blind-index work extends the grep to the whole clinical file."""

from __future__ import annotations

import sqlite3
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.crypto import (DataKeys, EnvelopeCodec, ErasureLedger, LocalKeyRing, UnreadableBody,
                                create_key_ring, ledger_key, patient_scope)
from fhir_server.search import extract
from fhir_server.settings import Settings
from fhir_server.store.base import Store, Write
from fhir_server.store.mongo import MongoStore
from fhir_server.store.mongo.layout import key
from fhir_server.store.rekey import rotate_data_key
from fhir_server.store.sqlite import SqliteStore
from tests.builders import observation, patient
from tests.conftest import authorized
from tests.http.helpers import send

NAME = "Zébulonmarqueur"
IDENTIFIER = "MRK-QX7Z-31415"
NOTE = "Notemarqueur très confidentielle"


def markers() -> list[bytes]:
    """Each marker as UTF-8 (composed and decomposed) and as an ASCII-escaped JSON string."""
    forms = []
    for text in (NAME, IDENTIFIER, NOTE, "Zebulonmarqueur"):
        for normal in ("NFC", "NFD"):
            value = unicodedata.normalize(normal, text)
            forms += [value.encode(), orjson.dumps(value)[1:-1],
                      value.encode("ascii", "backslashreplace").replace(b"\\x", b"\\u00")]
    return sorted(set(forms))


def _holding_markers(blobs: list[bytes]) -> list[bytes]:
    return [m for m in markers() for blob in blobs if m in blob]


def _marked_patient(**extra: object) -> dict[str, object]:
    # a hospital's patient number (an INS-NIR must be 15 characters with its key)
    return patient(family=NAME, identifier=[{"system": "urn:oid:1.2.250.1.999.1.1",
                                             "value": IDENTIFIER}], **extra)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path))
    settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir")
    with authorized(TestClient(create_app(settings))) as client:
        yield client


def _bodies(path: Path) -> list[bytes]:
    """Every stored body and outbox record of a SQLite store file."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT body FROM history WHERE body IS NOT NULL "
                            "UNION ALL SELECT body FROM outbox").fetchall()
    return [bytes(row[0]) for row in rows]


def test_sqlite_bodies_and_audit_trail_hold_no_marker(server: TestClient, tmp_path: Path) -> None:
    assert send(server, "PUT", "/fhir/Patient/m", {**_marked_patient(), "id": "m"}).status_code == 201
    updated = {**_marked_patient(gender="other"), "id": "m"}
    assert send(server, "PUT", "/fhir/Patient/m", updated).status_code == 200
    note = {**observation("Patient/m"), "id": "o", "note": [{"text": f"{NOTE} {NAME}"}]}
    assert send(server, "PUT", "/fhir/Observation/o", note).status_code == 201
    found = server.get(f"/fhir/Patient?name={NAME}&identifier={IDENTIFIER}")
    assert len(found.json()["entry"]) == 1 and NAME in found.text  # readable through the API
    assert NOTE in server.get("/fhir/Observation/o").text
    assert server.get("/fhir/Patient/m/_history/1").json()["name"][0]["family"] == NAME
    server.__exit__(None, None, None)  # stopped: every file is complete
    bodies = _bodies(tmp_path / "fhir.db") + _bodies(tmp_path / "audit.db")
    assert len(bodies) >= 8 and all(body[0] == 1 for body in bodies)  # envelopes, not JSON
    assert _holding_markers(bodies) == []
    # Every other file, whole: the audit store (its index holds no name), the chain, the keys.
    others = {p.name: p.read_bytes() for p in tmp_path.iterdir()
              if p.is_file() and not p.name.startswith("fhir.db")}
    assert {"audit.db", "audit-chain.db", "datakeys.db"} <= others.keys()
    assert _holding_markers(list(others.values())) == []
    # The clinical file, whole: the note (no search parameter indexes it) is nowhere.
    clinical = [p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("fhir.db")]
    assert clinical and not any(b"Notemarqueur" in f for f in clinical)


async def _raw_bodies(store: Store) -> list[bytes]:
    if isinstance(store, SqliteStore):
        return _bodies(store.path)
    assert isinstance(store, MongoStore)
    found = []
    for collection in (store.resources, store.history_docs, store.outbox_docs):
        found += [bytes(doc["body"]) async for doc in collection.find({"body": {"$ne": None}})]
    return found


def _write(resource: dict[str, object]) -> Write:
    return Write(str(resource["resourceType"]), str(resource["id"]), resource, extract(resource))


@pytest.mark.anyio
async def test_stored_documents_hold_ciphertext_only(store: Store) -> None:
    await store.commit([_write({**_marked_patient(), "id": "m"})])
    await store.commit([_write({**_marked_patient(gender="other"), "id": "m"})])
    raw = await _raw_bodies(store)
    assert len(raw) >= 2 and _holding_markers(raw) == []  # both versions (and the current)
    current = await store.read("Patient", "m")
    assert current is not None and current.body is not None and NAME.encode() in current.body


async def _swap(store: Store, source: tuple[str, int], target: tuple[str, int]) -> None:
    """Copy the stored body of Patient/<source id> version n onto a target version."""
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE history SET body = (SELECT body FROM history WHERE type = "
                         "'Patient' AND id = ? AND version = ?) WHERE type = 'Patient' AND "
                         "id = ? AND version = ?", (*source, *target))
        return
    assert isinstance(store, MongoStore)
    doc = await store.history_docs.find_one({"_id": f"{key('Patient', source[0])}/{source[1]}"})
    assert doc is not None
    await store.history_docs.update_one({"_id": f"{key('Patient', target[0])}/{target[1]}"},
                                        {"$set": {"body": doc["body"]}})
    if target[1] == 2:  # the current version
        await store.resources.update_one({"_id": key("Patient", target[0])},
                                         {"$set": {"body": doc["body"]}})


@pytest.mark.anyio
@pytest.mark.parametrize(("source", "target"), [(("a", 1), ("b", 1)), (("b", 1), ("b", 2))],
                         ids=["another resource", "another version"])
async def test_a_body_moved_elsewhere_fails_to_open(store: Store, source: tuple[str, int],
                                                    target: tuple[str, int]) -> None:
    for id in ("a", "b"):  # one patient compartment each, so two data keys
        await store.commit([_write({**patient(), "id": id})])
    await store.commit([_write({**patient(gender="male"), "id": "b"})])
    await _swap(store, source, target)
    with pytest.raises(UnreadableBody, match=f"Patient/b/_history/{target[1]} cannot be decrypted"):
        await store.vread("Patient", "b", target[1])
    assert (await store.vread("Patient", "a", 1)) is not None  # the others are untouched


def test_a_tampered_body_is_a_500_with_an_incident_audited(server: TestClient, tmp_path: Path) -> None:
    assert send(server, "PUT", "/fhir/Patient/t", {**_marked_patient(), "id": "t"}).status_code == 201
    with sqlite3.connect(tmp_path / "fhir.db") as conn:
        (stored,) = conn.execute("SELECT body FROM history WHERE id = 't'").fetchone()
        tampered = bytes(stored[:-1]) + bytes([stored[-1] ^ 1])
        conn.execute("UPDATE history SET body = ? WHERE id = 't'", (tampered,))
    answer = server.get("/fhir/Patient/t")
    assert answer.status_code == 500
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "incident" in outcome["issue"][0]["diagnostics"]
    assert stored.hex() not in answer.text and tampered[17:].hex() not in answer.text
    assert NAME not in answer.text and "cannot be decrypted" not in answer.text
    events = [e["resource"] for e in server.get("/fhir/AuditEvent?_count=100").json()["entry"]]
    failed = [e for e in events if e["outcome"] == "8"]
    assert len(failed) == 1 and failed[0]["outcomeDesc"] == "HTTP 500", events


@pytest.mark.anyio
async def test_data_key_rotation_reseals_every_version(store: Store) -> None:
    for gender in ("male", "female", "other"):
        await store.commit([_write({**patient(gender=gender), "id": "r"})])
    await store.commit([_write({**patient(), "id": "other"})])
    assert isinstance(store, (SqliteStore, MongoStore))
    codec = store.codec
    assert isinstance(codec, EnvelopeCodec)
    scope = patient_scope("r")
    [old] = codec.keys.keys_of(scope)
    untouched = await _raw_bodies(store)
    done = await rotate_data_key(codec.keys, [store], scope, batch=2, settle=0)
    assert done.retired == 1 and codec.keys.keys_of(scope) == [done.key_id] != [old]
    raw = await _raw_bodies(store)
    assert {blob[1:17] for blob in raw} - {blob[1:17] for blob in untouched} == {done.key_id}
    assert old not in {blob[1:17] for blob in raw}
    for version in (1, 2, 3):
        read = await store.vread("Patient", "r", version)
        assert read is not None and read.body is not None and read.body.startswith(b"{")
    current = await store.read("Patient", "r")
    assert current is not None and b'"other"' in (current.body or b"")


def test_an_unknown_data_key_is_a_500_not_an_erasure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body sealed under a key datakeys.db never made, or lost without an erasure (a stale
    copy of the file), is a fault: 500 with an incident id, audited. A body whose key an
    erasure destroyed is shredded: 404, left out of searches."""
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path))
    settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir")
    with authorized(TestClient(create_app(settings))) as client:
        for pid in ("lost", "erased", "kept"):
            assert send(client, "PUT", f"/fhir/Patient/{pid}", {**patient(), "id": pid}).status_code == 201
    keys = DataKeys(LocalKeyRing(settings.key_ring_path), settings.data_keys_path)
    [lost] = keys.keys_of(patient_scope("lost"))
    keys.destroy(patient_scope("erased"))
    keys.close()
    with sqlite3.connect(tmp_path / "datakeys.db") as conn:  # gone, but not by an erasure
        conn.execute("DELETE FROM data_key WHERE key_id = ?", (lost,))
    with authorized(TestClient(create_app(settings))) as client:
        answer = client.get("/fhir/Patient/lost")
        assert answer.status_code == 500, answer.text
        assert "incident" in answer.json()["issue"][0]["diagnostics"] and lost.hex() not in answer.text
        assert client.get("/fhir/Patient/lost/_history/1").status_code == 500
        assert client.get("/fhir/Patient/erased").status_code == 404
        assert client.get("/fhir/Patient/erased/_history/1").status_code == 404
        assert client.get("/fhir/Patient/kept").status_code == 200
        assert [e["resource"]["id"] for e in client.get("/fhir/Patient?_id=erased,kept").json()["entry"]] == ["kept"]
        assert client.get("/fhir/Patient?_id=lost,kept").status_code == 500
        # Audited: the events about Patient/lost are sealed under its (lost) key, so they are
        # counted from the index, which keeps the outcome.
        failed = client.get("/fhir/AuditEvent?outcome=8&_summary=count").json()
        assert failed["total"] == 3, failed


def test_erasures_recorded_before_destroyed_key_ids_were_kept_stay_erasures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A datakeys.db from before it kept the ids of destroyed keys: at start-up the server
    takes them from the erasure ledger, so the erased patient's versions read as erased (404),
    not as a fault (500)."""
    ring = tmp_path / "keys" / "ring.json"
    create_key_ring(ring)
    monkeypatch.setenv("FHIR_SERVER_KEY_RING", str(ring))
    settings = Settings(data_dir=tmp_path, base_url="http://testserver/fhir")
    with authorized(TestClient(create_app(settings))) as client:
        assert send(client, "PUT", "/fhir/Patient/old", {**patient(), "id": "old"}).status_code == 201
        for n in range(3):  # later traffic: the audit outbox holds nothing of Patient/old at exit
            assert send(client, "PUT", f"/fhir/Patient/n{n}", {**patient(), "id": f"n{n}"}).status_code == 201
    keys = DataKeys(LocalKeyRing(ring), settings.data_keys_path)
    ids = keys.keys_of(patient_scope("old"))
    keys.destroy(patient_scope("old"))
    ErasureLedger(settings.erasure_ledger_path, ledger_key(keys.provider)).append(
        {"patient": "old", "erased": "2026-01-01T00:00:00Z", "reason": "test", "by": "test",
         "client": None, "keys_destroyed": 1, "keys": [k.hex() for k in ids], "resources": {},
         "versions": {}, "job": None})
    keys.close()
    with sqlite3.connect(settings.data_keys_path) as conn:  # as an older datakeys.db was
        conn.execute("DELETE FROM destroyed")
    with authorized(TestClient(create_app(settings))) as client:
        assert client.get("/fhir/Patient/old/_history/1").status_code == 404
    with sqlite3.connect(settings.data_keys_path) as conn:
        assert [row[0] for row in conn.execute("SELECT key_id FROM destroyed")] == ids


def test_a_read_takes_its_patients_key_from_memory(server: TestClient,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A read of a patient whose key is cached looks it up once to open the body and once to
    seal its AuditEvent (plus its batch's note), and never reads `datakeys.db` nor unwraps
    a key: what encryption adds to a read stays a few µs (docs/security.md#cost)."""
    path = "/fhir/Patient/r"
    assert send(server, "PUT", path, {**_marked_patient(), "id": "r"}).status_code == 201
    assert send(server, "GET", path).status_code == 200  # the key is cached from here
    calls: dict[str, int] = {}

    def counted(name: str) -> None:
        method = getattr(DataKeys, name)

        def count(self: DataKeys, *args: object) -> object:
            calls[name] = calls.get(name, 0) + 1
            return method(self, *args)
        monkeypatch.setattr(DataKeys, name, count)

    for name in ("cipher", "current", "fetch", "_load", "_query"):
        counted(name)
    monkeypatch.setattr(LocalKeyRing, "unwrap", lambda *args: pytest.fail("a key was unwrapped"))
    assert send(server, "GET", path).status_code == 200
    assert calls == {"cipher": 1, "current": 2}
