"""What a database reader finds of a protected patient: no name, identifier, contact point or
address bytes (docs/blind-indexes.md, docs/security.md). With bodies encrypted (the default
codec) and protected parameters blind-indexed, the SQLite file and its WAL, every index row read
back, and every MongoDB document hold none of the markers, as written, case-folded and
accent-free, in UTF-8, NFD and JSON-escaped forms. The same store without blind indexes shows
them in its index: the check can fail.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from fhir_server.search import normalize
from fhir_server.store.base import Store
from fhir_server.store.mongo import MongoStore
from fhir_server.store.sqlite import SqliteStore
from tests.crypto.test_blind_search import BLIND, blind_store
from tests.store import search_model as m
from tests.store.conftest import DOUBLE, dispose, encrypting
from tests.store.mongo_double import DoubleClient

FAMILY, GIVEN, NEW_GIVEN = "ZQXMÀRKÉR", "Wyvérnoxé", "Qüvelquonde"
IDENTIFIER, PHONE, EMAIL = "7Q9X4M2K8R", "+33 6 97 53 18 64", "zqx.courriel@exemple.fr"
CITY, LINE, POSTAL = "Xylomarqueville", "17 impasse Vzorkmarq", "97Q41"
PLAIN = (FAMILY, GIVEN, NEW_GIVEN, IDENTIFIER, PHONE, EMAIL, CITY, LINE, POSTAL)


def patient(given: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "marked", "birthDate": "1961-04-05",
            "name": [{"family": FAMILY, "given": [given]}],
            "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": IDENTIFIER}],
            "telecom": [{"system": "phone", "value": PHONE}, {"system": "email", "value": EMAIL}],
            "address": [{"line": [LINE], "city": CITY, "postalCode": POSTAL}]}


def forms(text: str) -> set[bytes]:
    """The byte strings that would betray `text`: as written, normalized (as the plaintext
    index holds it), NFD, and JSON-escaped; and their first 5 characters, a prefix row."""
    found: set[bytes] = set()
    for variant in {text, normalize(text), text.lower(), unicodedata.normalize("NFD", text)}:
        for piece in (variant, variant[:5]):
            found |= {piece.encode(), json.dumps(piece).strip('"').encode()}
    return found


MARKERS = set().union(*(forms(text) for text in PLAIN))


async def write_update_search(store: Store) -> None:
    """Create, update and search the marked patient as a client would."""
    await store.commit([m.write(patient(GIVEN))])
    await store.commit([m.write(patient(NEW_GIVEN))])
    for params in ([("family", "zqxm")], [("given:exact", NEW_GIVEN)], [("identifier", IDENTIFIER)],
                   [("phone", PHONE)], [("address-city", "xylo")], [("_sort", "family")]):
        page = await store.search(m.query("Patient", *params))
        assert [v.id for v in page.matches] == ["marked"], params


def leaks(data: bytes) -> list[bytes]:
    return sorted(marker for marker in MARKERS if marker in data)


def index_rows(path: Path) -> bytes:
    """Every row of every table of a SQLite file, bodies left out."""
    rows = b""
    with sqlite3.connect(path) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [c[1] for c in conn.execute(f"PRAGMA table_info({table})") if c[1] != "body"]
            for row in conn.execute(f"SELECT {', '.join(columns)} FROM {table}"):  # noqa: S608
                rows += repr(row).encode() + b"".join(v.encode() for v in row if isinstance(v, str))
    return rows


@pytest.mark.anyio
async def test_sqlite_file_wal_and_index_rows_hold_no_marker(tmp_path: Path) -> None:
    store = blind_store("sqlite", tmp_path)
    assert isinstance(store, SqliteStore)
    await store.open()
    try:
        await write_update_search(store)
        rows = index_rows(store.path)
        files = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("blind.db*")))
        assert rows and any(p.name.endswith("-wal") for p in tmp_path.glob("blind.db*"))
        assert leaks(rows) == [] and leaks(files) == []
    finally:
        await dispose(store)


@pytest.mark.anyio
async def test_the_same_check_finds_a_plaintext_index(tmp_path: Path) -> None:
    """Bodies encrypted but no blind indexes: the index rows and files show the markers."""
    store = SqliteStore(tmp_path / "plain.db", codec=encrypting(tmp_path))
    await store.open()
    try:
        await write_update_search(store)
        assert normalize(FAMILY).encode() in index_rows(store.path)
        assert IDENTIFIER.encode() in b"".join(p.read_bytes() for p in tmp_path.glob("plain.db*"))
    finally:
        await dispose(store)


@pytest.mark.anyio
async def test_mongodb_documents_hold_no_marker(tmp_path: Path) -> None:
    store = MongoStore(DoubleClient(), codec=encrypting(tmp_path), blind=BLIND)  # on the double
    await store.migrate()
    await store.open()
    try:
        await write_update_search(store)
        seen = b""
        for collection in (store.resources, store.history_docs, store.guards, store.claims,
                           store.outbox_docs):
            async for doc in collection.find({}):
                seen += repr(doc).encode() + b"".join(
                    v.encode() if isinstance(v, str) else bytes(v) for v in _leaves(doc)
                    if isinstance(v, (str, bytes)))
        assert b"'str'" in seen and leaks(seen) == []
    finally:
        await dispose(store)


def _leaves(value: Any) -> list[Any]:
    """Every scalar inside a document (strings and binary bodies as they are stored)."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sqlite", DOUBLE])
async def test_a_logical_reference_keeps_the_identifier_blind(kind: str, tmp_path: Path) -> None:
    """An Observation naming its patient by identifier (`subject.identifier`, the INS)
    is found by `subject:identifier`, and its index holds no more of the identifier than
    the patient's own."""
    store = await asyncio.to_thread(blind_store, kind, tmp_path)
    await store.open()
    try:
        await store.commit([m.write(patient(GIVEN))])
        ins = {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": IDENTIFIER}
        await store.commit([m.write({"resourceType": "Observation", "id": "by-ins", "status": "final",
                                     "code": {"text": "x"}, "subject": {"identifier": ins}})])
        for value in (IDENTIFIER, f"{ins['system']}|{IDENTIFIER}"):
            page = await store.search(m.query("Observation", ("subject:identifier", value)))
            assert [v.id for v in page.matches] == ["by-ins"], value
        if isinstance(store, SqliteStore):
            raw = index_rows(store.path)
        else:
            raw = b"".join([repr(doc).encode() async for doc in store.resources.find({})])  # type: ignore[attr-defined]
        assert b"by-ins" in raw and IDENTIFIER.encode() not in raw
    finally:
        await dispose(store)
