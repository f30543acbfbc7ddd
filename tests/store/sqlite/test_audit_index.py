"""The compact AuditEvent index of the SQLite store (store/sqlite/audit_index.py): one
`idx_audit` row per event, written, replaced and removed wherever index rows are, filled from
the generic rows of a store made before it, and holding digests where a parameter is
protected. What its searches answer is tests/store/test_audit_search.py's."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.crypto import BlindDigest
from fhir_server.search import BlindIndex, default_registry, extract, parse_query
from fhir_server.store.base import Delete, Write
from fhir_server.store.bodies import opened
from fhir_server.store.sqlite import SqliteStore, audit_index, index, schema
from fhir_server.store.sqlite.index import LOOKUPS
from fhir_server.store.sqlite.query import SqliteSearch
from tests.store.conftest import encrypting

pytestmark = pytest.mark.anyio
_INTERACTION = "http://hl7.org/fhir/restful-interaction"


def event(id: str, *, subtypes: tuple[str, ...] = ("read",), altids: tuple[str, ...] = ("app",),
          patient: str = "Patient/p1", outcome: str = "0") -> dict[str, Any]:
    """An AuditEvent shaped as audit/events.py records a patient's read."""
    return {
        "resourceType": "AuditEvent", "id": id,
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": _INTERACTION, "code": s} for s in subtypes],
        "action": "R", "recorded": "2026-12-07T02:00:00.123Z", "outcome": outcome,
        "agent": [{"requestor": True, "altId": a} for a in altids],
        "source": {"observer": {"display": "fhir-server"}},
        "entity": [{"what": {"reference": patient}, "role": {"code": "1"}}],
    }


def _write(resource: dict[str, Any]) -> Write:
    return Write(resource["resourceType"], resource["id"], resource, extract(resource))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened_store = SqliteStore(tmp_path / "audit.db", codec=encrypting(tmp_path))
    await opened_store.open()
    yield opened_store
    await opened_store.close()


def _rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, args).fetchall()


def _generic(path: Path) -> dict[str, int]:
    """How many generic rows each AuditEvent parameter has."""
    counts: dict[str, int] = {}
    for table in ("idx_token", "idx_date", "idx_reference", "idx_string", "idx_uri"):
        for code, n in _rows(path, f"SELECT p.code, count(*) FROM {table} x JOIN search_param p "  # noqa: S608
                                   "ON p.pid = x.pid WHERE p.rtype = 'AuditEvent' GROUP BY p.code"):
            counts[code] = counts.get(code, 0) + n
    return counts


async def _ids(store: SqliteStore, *criteria: tuple[str, str]) -> list[str]:
    query, issues = parse_query("AuditEvent", list(criteria), default_registry())
    assert not issues
    return [v.id for v in (await store.search(query)).matches]


async def test_an_event_writes_one_row_and_its_references(store: SqliteStore, tmp_path: Path) -> None:
    await store.commit([_write(event("e1"))])
    [row] = _rows(tmp_path / "audit.db", "SELECT * FROM idx_audit")
    columns = dict(zip(("pk", *audit_index.COLUMNS), row, strict=True))
    assert columns["subtype__code"] == "read" and columns["subtype__system"] == _INTERACTION
    assert columns["type__text"] == "restful operation" and columns["altid__code"] == "app"
    assert columns["date__high"] - columns["date__low"] == 999  # a millisecond's precision
    # Of the 8 generic rows an event had, the references are left.
    assert _generic(tmp_path / "audit.db") == {"entity": 1, "patient": 1}


async def test_several_values_of_a_parameter_stay_generic_rows(store: SqliteStore, tmp_path: Path) -> None:
    await store.commit([_write(event("e1", subtypes=("read", "vread"), altids=("a", "b", "a")))])
    [(subtype, altid, action)] = _rows(tmp_path / "audit.db",
                                       "SELECT subtype__code, altid__code, action__code FROM idx_audit")
    assert (subtype, altid, action) == (None, None, "R")
    assert _generic(tmp_path / "audit.db") == {"subtype": 2, "altid": 2, "entity": 1, "patient": 1}
    assert await _ids(store, ("subtype", "vread"), ("altid", "b")) == ["e1"]
    assert await _ids(store, ("subtype:missing", "false"), ("altid:not", "b")) == []


async def test_update_delete_and_erase_replace_and_remove_the_row(store: SqliteStore, tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    await store.commit([_write(event("e1")), _write(event("e2")), _write(event("e3"))])
    await store.commit([_write(event("e1", outcome="8"))])
    assert _rows(path, "SELECT outcome__code FROM idx_audit ORDER BY pk") == [("8",), ("0",), ("0",)]
    assert await _ids(store, ("outcome", "8")) == ["e1"]
    await store.commit([Delete("AuditEvent", "e2")])
    assert len(_rows(path, "SELECT pk FROM idx_audit")) == 2
    assert await _ids(store, ("outcome", "0")) == ["e3"]
    # The audit pruning's removal (audit/prune.py) erases events by `_id`.
    query, _ = parse_query("AuditEvent", [("_id", "e1,e3")], default_registry())
    await store.erase([query], ("Patient", "-"))
    assert _rows(path, "SELECT pk FROM idx_audit") == []
    assert _generic(path) == {}


async def test_a_rolled_back_unit_leaves_no_row(store: SqliteStore, tmp_path: Path) -> None:
    await store.commit([_write(event("e1"))])
    with pytest.raises(Exception, match="already exists"):
        await store.commit([_write(event("e2")), Write("AuditEvent", "e1", event("e1"),
                                                       extract(event("e1")), create_only=True)])
    assert len(_rows(tmp_path / "audit.db", "SELECT pk FROM idx_audit")) == 1
    assert await _ids(store, ("subtype", "read")) == ["e1"]


async def test_a_store_made_before_the_compact_index_is_filled_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data directory of the previous version: every value a generic row, no `idx_audit`.
    Opening it moves the single values into the rows and answers every search the same."""
    path = tmp_path / "audit.db"
    events = [event("e1"), event("e2", subtypes=("read", "vread"), altids=()),
              event("e3", subtypes=(), outcome="4", patient="Patient/p2")]
    criteria = [[("subtype", "read")], [("subtype", "vread")], [("subtype:missing", "true")],
                [("altid", "app")], [("altid:missing", "true")], [("outcome:not", "0")],
                [("date", "2026-12-07")], [("date", "lt2026-12-07T02:00:00.123Z")],
                [("patient", "Patient/p2")], [("type:text", "restful")], [("_sort", "-date")]]
    with monkeypatch.context() as old:
        old.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:schema.MIGRATIONS.index(audit_index.DDL)])
        old.setattr(audit_index, "AUDIT_TYPE", "no resource type")
        old.setattr(index, "TABLE_NAMES", tuple(t for t in index.TABLE_NAMES if t != audit_index.TABLE))
        old.setattr(index, "LOOKUPS", {k: v for k, v in LOOKUPS.items() if audit_index.TABLE not in v})
        before = SqliteStore(path, codec=encrypting(tmp_path))
        await before.open()
        await before.commit([_write(e) for e in events])
        await before.commit([Delete("AuditEvent", "e3")])
        await before.commit([_write(events[2])])
        answers = [await _ids(before, *c) for c in criteria]
        await before.close()
    assert not _rows(path, "SELECT name FROM sqlite_master WHERE name = 'idx_audit'")
    assert _generic(path)["subtype"] == 3

    monkeypatch.setattr(audit_index, "FILL_CHUNK", 2)  # the 3 events in two steps
    after = SqliteStore(path, codec=encrypting(tmp_path))
    await after.open()
    try:
        assert [await _ids(after, *c) for c in criteria] == answers
        assert answers[0] == ["e1", "e2"] and answers[2] == ["e3"]
        assert len(_rows(path, "SELECT pk FROM idx_audit")) == 3
        assert _generic(path) == {"subtype": 2, "entity": 3, "patient": 3}
        await after.commit([_write(event("e4"))])  # and it goes on as a new store does
        assert await _ids(after, ("subtype", "read")) == ["e1", "e2", "e4"]
    finally:
        await after.close()


async def test_a_restore_writes_the_rows_and_builds_their_lookups(store: SqliteStore, tmp_path: Path) -> None:
    await store.commit([_write(event(f"e{n}", subtypes=("read",) * (1 + n % 2))) for n in range(6)])
    await store.commit([_write(event("e1", subtypes=("read", "vread")))])
    dumped = [v async for batch in store.dump(count=4) for v in batch]
    restored = SqliteStore(tmp_path / "restored.db", codec=store.codec)
    await restored.open()
    try:
        for version in dumped:
            body = opened(store.codec, version).body
            await restored.load([(version, extract(orjson.loads(body or b"")))])
        await restored.loaded()
        wanted = "SELECT r.id, a.* FROM idx_audit a JOIN resource r ON r.pk = a.pk ORDER BY r.id"
        assert ([row[:1] + row[2:] for row in _rows(tmp_path / "restored.db", wanted)]
                == [row[:1] + row[2:] for row in _rows(tmp_path / "audit.db", wanted)])
        assert _generic(tmp_path / "restored.db") == _generic(tmp_path / "audit.db")
        names = {row[0] for row in _rows(tmp_path / "restored.db", "SELECT name FROM sqlite_master")}
        assert {name for name in LOOKUPS if name.startswith("idx_audit")} <= names
        assert await _ids(restored, ("subtype", "vread")) == ["e1"]
    finally:
        await restored.close()


async def test_protected_parameters_keep_digests_in_the_row(tmp_path: Path) -> None:
    """docs/blind-indexes.md: a protected AuditEvent parameter (here `altid`) is indexed as a
    digest, in the row as in generic rows, and searched by its digest."""
    blind = BlindIndex(("AuditEvent.altid",), BlindDigest(lambda p: hashlib.sha256(p.encode()).digest()),
                       default_registry())
    path = tmp_path / "blind.db"
    store = SqliteStore(path, codec=encrypting(tmp_path), blind=blind)
    await store.open()
    try:
        await store.commit([_write(event("e1", altids=("dr-house",))),
                            _write(event("e2", altids=("dr-house", "dr-wilson")))])
        [(altid,), (none,)] = _rows(path, "SELECT altid__code FROM idx_audit ORDER BY pk")
        assert altid is not None and "house" not in altid and none is None
        assert b"dr-" not in repr(_rows(path, "SELECT * FROM idx_token")).encode()
        assert await _ids(store, ("altid", "dr-house")) == ["e1", "e2"]
        assert await _ids(store, ("altid", "dr-wilson")) == ["e2"]
        assert await _ids(store, ("altid:not", "dr-wilson")) == ["e1"]
    finally:
        await store.close()


@pytest.mark.parametrize(("criteria", "indexes"), [
    ([("subtype", "read")], ["idx_audit_subtype", "idx_token_code"]),
    ([("outcome", "8"), ("patient", "Patient/p1")], ["idx_audit_outcome", "idx_reference_pk"]),
    ([("date", "ge2026-12-07"), ("altid", "app")],
     ["idx_audit_altid", "SEARCH idx_audit USING INTEGER PRIMARY KEY (rowid=?)"]),
    ([("date", "lt2026-12-07")], ["idx_audit_date_low"]),
    ([("action", "R"), ("_sort", "-date")], ["idx_audit_action"]),
])
async def test_searches_on_the_columns_seek_their_indexes(
    store: SqliteStore, tmp_path: Path, criteria: list[tuple[str, str]], indexes: list[str]
) -> None:
    """A driving clause seeks a column's index (and the generic rows' for several values);
    the other clauses are one rowid look-up per event: no index table is scanned."""
    await store.commit([_write(event("e1")), _write(event("e2", subtypes=("read", "vread")))])
    with sqlite3.connect(tmp_path / "audit.db") as conn:
        query, _ = parse_query("AuditEvent", criteria, default_registry())
        plan = SqliteSearch(conn, store.ids, store.registry).plan(query)
    assert not [step for step in plan if step.startswith("SCAN")], plan
    for index in indexes:
        assert any(index in step for step in plan), (index, plan)


async def test_sealed_audit_events_add_nothing_to_the_index_of_key_ids(store: SqliteStore) -> None:
    """No erasure removes AuditEvents by key (they shred with it): their random key ids stay
    out of `history_key`, where each would cost a write at a random place of the index
    (docs/security.md#cost). A sealed Patient's version is indexed as before."""
    await store.commit([_write(event(f"e{n}", patient=f"Patient/p{n}")) for n in range(20)])
    await store.commit([_write({"resourceType": "Patient", "id": "p1"})])
    [(sealed,)] = _rows(store.path, "SELECT count(*) FROM history WHERE substr(body, 1, 1) = x'01'")
    assert sealed == 21  # every body is sealed
    assert _rows(store.path, "SELECT sum(ncell) FROM dbstat WHERE name = 'history_key' "
                             "AND pagetype = 'leaf'") == [(1,)]
