"""Backups and restores (backup/): erasure reaches through them — back up, erase, restore the
older archive, and the patient is gone from the API, the store's files and the key ring, the
erasure is in the restored trail and the chain verifies; damaged, cut, foreign archives are
refused with nothing changed. On each store for the library, on SQLite for the commands."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server import cli
from fhir_server.audit.chain import Chain, verify
from fhir_server.audit.recorder import AuditRecorder
from fhir_server.backup import Target, prune, restore, take
from fhir_server.backup.take import archive_name
from fhir_server.crypto import DataKeys, EnvelopeCodec, patient_scope
from fhir_server.search import default_registry
from fhir_server.services.erase import destroyed_keys
from fhir_server.services.shredded import StoredTrail, classify
from fhir_server.store.base import HistoryQuery, Store
from fhir_server.store.sqlite import SqliteStore
from fhir_server import clock
from tests.privacy.conftest import Server
from tests.store.conftest import migrated_double

A_IDS = {"a", "a-obs0", "a-obs1", "a-obs2", "a-cond"}


def _take(server: Server, directory: Path) -> Path:
    app: Any = server.client.app
    store, erasures = app.state.context.store, app.state.context.erasures
    recorder = app.state.recorder

    async def run() -> Path:
        path, _ = await take(main=store.main, audit=store.audit, chain=recorder.chain,
                             provider=erasures.keys.provider, directory=directory, keep_days=30,
                             operator="test", record=recorder.record)
        return path

    return server.client.portal.call(run)  # type: ignore[no-any-return, union-attr]


async def _restore_into(server: Server, archive: Path, where: Path) -> tuple[Any, Store, Store, Chain]:
    app: Any = server.client.app
    erasures = app.state.context.erasures
    # A restore is a command of its own: its data keys are read afresh from datakeys.db.
    codec = EnvelopeCodec(DataKeys(erasures.keys.provider, server.settings.data_keys_path))
    if isinstance(app.state.context.store.main, SqliteStore):
        main: Store = SqliteStore(where / "fhir.db", codec=codec)
    else:
        main = await asyncio.to_thread(migrated_double, codec=codec)
    audit = SqliteStore(where / "audit.db", codec=codec)
    chain = Chain(where / "audit-chain.db")
    await main.open()
    await audit.open()
    done = await restore(archive, Target(main, audit, chain, erasures.keys.provider, codec,
                                         erasures.ledger, default_registry(),
                                         AuditRecorder(audit, chain).record))
    return done, main, audit, chain


def test_an_erasure_reaches_through_an_older_backup(server: Server, tmp_path: Path) -> None:
    assert server.client.delete("/fhir/Observation/a-obs2").status_code in (200, 204)
    archive = _take(server, tmp_path / "backups")
    assert b"Zwxqvtrudel" not in archive.read_bytes()
    assert server.erase("a", reason="GDPR request 42").status_code == 200
    where = tmp_path / "restored"
    where.mkdir()

    async def run() -> None:
        done, main, audit, chain = await _restore_into(server, archive, where)
        try:
            assert done.replayed == ["a"] and done.left_out > 0
            history = (await main.history(HistoryQuery(count=1000))).versions
            assert {v.id for v in history} & A_IDS == set()
            assert {"b", "b-obs0", "b-cond"} <= {v.id for v in history}
            assert await main.read("Patient", "a") is None
            patient_b = await main.read("Patient", "b")
            assert patient_b is not None and b"Keep" in (patient_b.body or b"")
            erasures = server.client.app.state.context.erasures  # type: ignore[attr-defined]
            assert erasures.keys.keys_of(patient_scope("a")) == []
            trail, events = StoredTrail(), {}
            async for versions in audit.dump():
                for version in versions:
                    body = classify(trail, audit.codec, destroyed_keys(erasures.ledger), version)  # type: ignore[attr-defined]
                    if body is not None:
                        events[version.id] = orjson.loads(body)
            replays = [e for e in events.values() if e["action"] == "D" and any(
                x.get("name") == "Patient/a" for x in e.get("entity", []))]
            assert len(replays) == 1
            reason = {d["type"]: d["valueString"] for d in replays[0]["entity"][0]["detail"]}["reason"]
            assert "replayed on restore" in reason and "GDPR request 42" in reason
            verdict = verify(chain.links(), events, {*events, *trail.shredded}, trail.shredded)
            assert verdict.problems == [] and verdict.shredded > 0
        finally:
            chain.close()
            await main.close()
            await audit.close()

    server.client.portal.call(run)  # type: ignore[union-attr]
    if (where / "fhir.db").exists():
        db = sqlite3.connect(where / "fhir.db")
        assert db.execute("SELECT count(*) FROM history WHERE id IN ('a', 'a-obs0', 'a-obs1', "
                          "'a-obs2', 'a-cond')").fetchone()[0] == 0
        db.close()


def test_old_archives_are_pruned(tmp_path: Path) -> None:
    for days in (0, 29, 31, 400):
        (tmp_path / archive_name(clock.now() - __import__("datetime").timedelta(days=days))).touch()
    (tmp_path / "notes.txt").touch()
    removed = prune(tmp_path, 30)
    assert len(removed) == 2
    assert len(list(tmp_path.iterdir())) == 3
