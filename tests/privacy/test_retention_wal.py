"""What the retention run's erasures leave in SQLite's files (privacy/retention.py
`CHECKPOINTED_TOGETHER`, store `checkpoints_deferred`): the WAL is checkpointed as the run
starts, after each group of records and as it ends, so that till then an erased row may still
be in the file or the WAL, and after that in neither; a run killed before its checkpoint has
what it erased cleared by the next run's first one. Every other erasure checkpoints at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from fhir_server.privacy import retention
from fhir_server.store.sqlite import SqliteStore

from tests.privacy.conftest import Server
from tests.builders import observation, patient
from tests.privacy.test_retention import Killed, _put, _run, on

# A patient's id: in their rows of the resource and history tables as it is (a name is
# indexed as a digest, a body sealed)
MARKER = "zwxqvtrudel"


def _left(server: Server) -> bool:
    """Whether the marker is still in the clinical store's database file or its WAL."""
    data = Path(server.settings.data_dir)
    return any(MARKER.encode() in (data / name).read_bytes() for name in ("fhir.db", "fhir.db-wal")
               if (data / name).exists())


def _wal(server: Server) -> int:
    wal = Path(server.settings.data_dir) / "fhir.db-wal"
    return wal.stat().st_size if wal.exists() else 0


def _spied(monkeypatch: pytest.MonkeyPatch, server: Server,
           dies: Callable[[int], bool] = lambda _: False) -> list[tuple[str, Any, bool]]:
    """The store's erasures (whose, `checkpoint` as asked, the marker left after it) and
    checkpoints (the marker left after each), in order; the process dying at the checkpoint
    numbered `dies` (from 1), before it is done."""
    seen: list[tuple[str, Any, bool]] = []
    erase_each, checkpoint = SqliteStore.erase_each, SqliteStore.checkpoint

    async def erasing(store: SqliteStore, erasures: Any, **options: Any) -> Any:
        erased = await erase_each(store, erasures, **options)  # `erase` too: it calls it
        if store.path.name == "fhir.db":  # not the audit trail's pruning
            seen.extend((f"erase {erasure.last[1]}", options.get("checkpoint", True), _left(server))
                        for erasure in erasures)
        return erased

    async def checkpointing(store: SqliteStore) -> None:
        if dies(1 + sum(what == "checkpoint" for what, _, _ in seen)):
            raise Killed
        await checkpoint(store)
        seen.append(("checkpoint", None, _left(server)))

    monkeypatch.setattr(SqliteStore, "erase_each", erasing)
    monkeypatch.setattr(SqliteStore, "checkpoint", checkpointing)
    return seen


def _seed(server: Server) -> None:
    """A third record, inactive since 2027 as a's and b's (seeded on the real clock), whose
    id is the marker."""
    with on(date(2027, 1, 10)):
        _put(server, {**patient(), "id": MARKER})
        _put(server, {**observation(f"Patient/{MARKER}"), "id": f"{MARKER}-obs"})


def test_a_runs_erasures_are_checkpointed_by_group_and_at_its_ends(
        sqlite_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "ARCHIVED_TOGETHER", 1)
    monkeypatch.setattr(retention, "CHECKPOINTED_TOGETHER", 2)
    _seed(sqlite_server)
    with on(date(2029, 1, 10)):
        seen = _spied(monkeypatch, sqlite_server)
        made = _run(sqlite_server)
    assert made.failed == [] and made.counts()["patient-record archive"] == 3
    assert [(what, asked) for what, asked, _ in seen] == [
        ("checkpoint", None), ("erase a", False), ("erase b", False), ("checkpoint", None),
        (f"erase {MARKER}", False), ("checkpoint", None)]
    assert seen[4][2]  # its rows, erased, may be in the file or the WAL until the checkpoint
    assert not seen[5][2]
    assert not _left(sqlite_server) and _wal(sqlite_server) == 0


def test_a_run_killed_before_its_checkpoint_is_cleared_by_the_next_runs_first(
        sqlite_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies at the group's checkpoint (the run's second), after the group's
    erasures: their rows stay in the file or the WAL; the next run's first checkpoint clears
    them, before it does anything else."""
    monkeypatch.setattr(retention, "ARCHIVED_TOGETHER", 1)
    monkeypatch.setattr(retention, "CHECKPOINTED_TOGETHER", 3)
    _seed(sqlite_server)
    alive = False
    with on(date(2029, 1, 10)):
        seen = _spied(monkeypatch, sqlite_server, dies=lambda number: not alive and number >= 2)
        with pytest.raises(Killed):
            _run(sqlite_server)
        assert [what for what, _, _ in seen] == ["checkpoint", "erase a", "erase b", f"erase {MARKER}"]
        assert _left(sqlite_server)
        alive = True
        seen.clear()
        _run(sqlite_server)
    assert seen[0] == ("checkpoint", None, False)
    assert not _left(sqlite_server) and _wal(sqlite_server) == 0


def test_an_erasure_asked_for_is_checkpointed_at_once(
        sqlite_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed(sqlite_server)
    assert _left(sqlite_server)
    seen = _spied(monkeypatch, sqlite_server)
    assert sqlite_server.erase(MARKER).status_code == 200
    assert seen == [(f"erase {MARKER}", True, False)]
