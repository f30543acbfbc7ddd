"""Erasure on SQLite, checked in the file itself: no row of the erased resources in any
table, and none of their bytes in the database file or its WAL (secure_delete, the WAL
truncated after the erasure)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fhir_server.crypto import patient_key_ids
from fhir_server.search import default_registry, extract
from fhir_server.services.erase import compartment
from fhir_server.store.base import Write
from fhir_server.store.sqlite import SqliteStore
from fhir_server.store.erasure import BATCH
from fhir_server.store.sqlite import erase as sqlite_erase
from fhir_server.store.sqlite.index import TABLE_NAMES
from fhir_server.store.sqlite.schema import ERASABLE
from tests.builders import observation, patient

pytestmark = pytest.mark.anyio
MARKER = "Zwxqvtrudel"


def _write(resource_type: str, id: str, resource: dict[str, object]) -> Write:
    resource = {**resource, "resourceType": resource_type, "id": id}
    return Write(resource_type, id, resource, extract(resource))


async def test_no_row_and_no_byte_left(tmp_path: Path) -> None:
    path = tmp_path / "fhir.db"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.commit([_write("Patient", "a", patient(family=MARKER))])
        await store.commit([_write("Patient", "a", patient(family=MARKER, gender="male"))])
        await store.commit([_write("Observation", "o", observation("Patient/a", note=[{"text": MARKER}]))])
        await store.commit([_write("Patient", "b", patient(family="Keep"))])
        pks = [row[0] for row in sqlite3.connect(path).execute(
            "SELECT pk FROM resource WHERE id IN ('a', 'o')")]
        await store.erase(compartment(default_registry(), "a"), ("Patient", "a"))
        db = sqlite3.connect(path)
        assert db.execute("SELECT count(*) FROM history WHERE id IN ('a', 'o')").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM resource WHERE id IN ('a', 'o')").fetchone()[0] == 0
        for table in TABLE_NAMES:
            marks = ",".join("?" * len(pks))
            assert db.execute(f"SELECT count(*) FROM {table} WHERE pk IN ({marks})", pks).fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM history WHERE id = 'b'").fetchone()[0] == 1
        db.close()
        wal = path.with_name("fhir.db-wal")
        assert not wal.exists() or wal.stat().st_size == 0
        for file in (path, wal):
            if file.exists():
                raw = file.read_bytes()
                assert MARKER.encode() not in raw and MARKER.lower().encode() not in raw
    finally:
        await store.close()


@pytest.mark.parametrize("size", [BATCH, BATCH + 1])
async def test_a_compartment_of_several_batches_leaves_no_row(tmp_path: Path, size: int) -> None:
    """`size` resources of three types (two versions each, one deleted) beside the Patient:
    batches of BATCH cut through them and through each type; every table is empty of them,
    the history's key index included, and another patient keeps everything."""
    from fhir_server.store.base import Delete
    from tests.crypto.test_blind_search import blind_store

    store = blind_store("sqlite", tmp_path)
    assert isinstance(store, SqliteStore)
    await store.open()
    try:
        for who in ("a", "b"):
            await store.commit([_write("Patient", who, patient(family=MARKER, identifier=[
                {"system": "urn:x", "value": f"id-{who}"}]))])
        types = ("Observation", "Condition", "Encounter")
        kinds = [(types[n % 3], f"r{n}") for n in range(size)]
        for version in (1, 2):
            await store.commit([_write(t, id, {"subject": {"reference": "Patient/a"},
                                               "status": "final" if version == 2 else "preliminary",
                                               "code": {"text": MARKER}})
                                for t, id in kinds] + [_write("Observation", "keep", observation(
                                    "Patient/b"))])
        await store.commit([Delete(*kinds[-1])])
        db = sqlite3.connect(path := tmp_path / "blind.db")
        pks = [pk for (pk,) in db.execute("SELECT pk FROM resource WHERE id != 'b' AND id != 'keep'")]
        kept = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
                for table in TABLE_NAMES}
        db.close()
        erased = await store.erase(compartment(default_registry(), "a"), ("Patient", "a"))
        assert sum(erased.resources.values()) == size + 1
        assert sum(erased.versions.values()) == 2 * size + 1 + 1  # the deletion a version too
        db = sqlite3.connect(path)
        assert db.execute("SELECT count(*) FROM resource").fetchone()[0] == 2  # b, keep
        assert db.execute("SELECT count(*) FROM history WHERE id NOT IN ('b', 'keep')").fetchone()[0] == 0
        marks = ",".join("?" * len(pks))
        for table in TABLE_NAMES:
            assert db.execute(f"SELECT count(*) FROM {table} WHERE pk IN ({marks})",  # noqa: S608
                              pks).fetchone()[0] == 0
            assert kept[table] == 0 or db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        left = {bytes(k) for (k,) in db.execute(
            "SELECT DISTINCT substr(body, 2, 16) FROM history INDEXED BY history_key "
            f"WHERE {ERASABLE}")}
        assert left and not left & patient_key_ids(store.codec, "a")  # b's key only
        db.close()
    finally:
        await store.close()


async def test_an_erasure_failing_in_a_later_batch_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One transaction: a failure after the first batch was removed rolls every batch back."""
    store = SqliteStore(tmp_path / "fhir.db")
    await store.open()
    try:
        await store.commit([_write("Patient", "a", patient())])
        await store.commit([_write("Observation", f"o{n}", observation("Patient/a"))
                            for n in range(BATCH + 10)])
        calls: list[int] = []
        real = sqlite_erase._remove_batch

        def failing(conn: sqlite3.Connection, keys: list[tuple[str, str]], erased: object) -> None:
            calls.append(len(keys))
            if len(calls) == 2:
                raise OSError("disk gone")
            real(conn, keys, erased)  # type: ignore[arg-type]

        monkeypatch.setattr(sqlite_erase, "_remove_batch", failing)
        with pytest.raises(OSError):
            await store.erase(compartment(default_registry(), "a"), ("Patient", "a"))
        assert calls == [BATCH, 10]
        assert await store.count("Observation") == BATCH + 10
        assert await store.read("Patient", "a") is not None
        db = sqlite3.connect(tmp_path / "fhir.db")
        assert db.execute("SELECT count(*) FROM history").fetchone()[0] == BATCH + 11
        assert db.execute("SELECT count(*) FROM idx_reference").fetchone()[0] > 0
        db.close()
    finally:
        await store.close()


def _holds(path: Path, marker: str = MARKER) -> bool:
    """Whether the database file or its WAL holds `marker`."""
    return any(marker.encode() in file.read_bytes()
               for file in (path, path.with_name(path.name + "-wal")) if file.exists())


def _wal_size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


async def _seeded(path: Path) -> SqliteStore:
    """An open store holding Patient/a (named MARKER) and Patient/b, the WAL checkpointed:
    the marker is in the database file only."""
    store = SqliteStore(path)
    await store.open()
    await store.commit([_write("Patient", "a", patient(family=MARKER))])
    await store.commit([_write("Patient", "b", patient(family="Keep"))])
    await store.checkpoint()
    assert _holds(path) and _wal_size(path) == 0
    return store


async def _erase_a(store: SqliteStore, checkpoint: bool = True) -> None:
    await store.erase(compartment(default_registry(), "a"), ("Patient", "a"), checkpoint=checkpoint)


async def test_an_erasure_leaving_the_checkpoint_to_its_caller_is_gone_after_it(tmp_path: Path) -> None:
    path = tmp_path / "fhir.db"
    store = await _seeded(path)
    try:
        await _erase_a(store, checkpoint=False)
        assert await store.read("Patient", "a") is None
        assert _holds(path)  # the page of before, in the file until the checkpoint
        await store.checkpoint()
        assert not _holds(path) and _wal_size(path) == 0
        assert await store.read("Patient", "b") is not None
    finally:
        await store.close()


async def test_checkpoints_deferred_raise_the_writers_wal_bound_for_the_block_only(tmp_path: Path) -> None:
    """The block checkpoints as it starts and as it ends, even ended by an error; inside it
    the writer connection's `wal_autocheckpoint` is raised, the readers' are not, and after
    it the writer's is as before."""
    path = tmp_path / "fhir.db"
    store = await _seeded(path)

    def bound(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    try:
        await store.commit([_write("Patient", "c", patient())])
        assert _wal_size(path) > 0
        with pytest.raises(RuntimeError):
            async with store.checkpoints_deferred():
                assert _wal_size(path) == 0
                assert await store._run(store._writer, bound) == sqlite_erase.DEFERRED_WAL_PAGES
                assert await store._read(bound) == 1000
                await _erase_a(store, checkpoint=False)
                assert _holds(path)
                raise RuntimeError("the run stops")
        assert not _holds(path) and _wal_size(path) == 0
        assert await store._run(store._writer, bound) == 1000
    finally:
        await store.close()


async def test_opening_the_store_checkpoints_what_a_process_killed_amid_erasures_left(
        tmp_path: Path) -> None:
    """A process killed after erasures whose checkpoint it deferred (never closed: closing
    checkpoints too): the next store opened on the file (the server starting) clears them."""
    path = tmp_path / "fhir.db"
    killed = await _seeded(path)
    try:
        await _erase_a(killed, checkpoint=False)
        assert _holds(path)
        starting = SqliteStore(path)
        await starting.open()
        await starting.close()
        assert not _holds(path)
    finally:
        await killed.close()
