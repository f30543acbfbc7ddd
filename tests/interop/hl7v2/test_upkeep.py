"""What erasure and retention do to the inbox (docs/hl7v2.md "Erasure and retention"): a
patient's `$erase` wipes the messages that wrote them and deletes those in error naming
them, from the file and its WAL, and a resend of a wiped message is answered as the duplicate
it is, never writing the patient again; applied messages past FHIR_SERVER_HL7_KEEP_DAYS are wiped (their key stays), those in
error deleted, by the periodic task on the server's clock."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fhir_server import clock
from fhir_server.app import body_codec
from fhir_server.interop.hl7v2 import APPLIED, ERASED, INBOX, Receiver, expire, keep, receiver_for
from fhir_server.interop.hl7v2.inbox import Inbox
from fhir_server.interop.hl7v2.upkeep import forget_patient
from fhir_server.model.errors import FhirError, Kind
from fhir_server.services.context import Context
from fhir_server.settings import Settings
from tests.privacy.conftest import Server, sqlite_server  # noqa: F401 - a fixture

from .conftest import message, msa
from .test_sealed import files, marked

SEARCH = "/fhir/Patient?identifier=urn:oid:1.2.250.1.999.1.1|2700569123456"


def _rows(path: Path) -> dict[int, tuple[str, bytes, list[str]]]:
    with sqlite3.connect(path) as db:
        return {id: (state, raw, [p for (p,) in db.execute(
                    "SELECT patient FROM message_patient WHERE message = ?", (id,))])
                for id, state, raw in db.execute("SELECT id, state, raw FROM message")}


def test_an_erasure_wipes_the_patients_messages_and_a_resend_does_not_bring_them_back(
        sqlite_server: Server) -> None:  # noqa: F811 - the fixture imported above
    server = sqlite_server
    app, settings, portal = server.client.app, server.settings, server.client.portal
    assert portal is not None
    receiver = receiver_for(settings, app.state.context, app.state.recorder,  # type: ignore[attr-defined]
                            body_codec(settings))
    path = settings.data_dir / INBOX
    try:
        first = portal.call(receiver.receive, marked("ERASE-1"))
        assert msa(first)[1] == "AA"
        assert msa(portal.call(receiver.receive, message("adt_a01_admit_2.hl7")))[1] == "AA"
        refused = marked("ERASE-2").replace(b"19700512", b"1970-05-12")  # the same patient's
        assert msa(portal.call(receiver.receive, refused))[1] == "AE"
        other_refused = message("adt_a01_admit_2.hl7").replace(b"A01-0002", b"A01-E").replace(
            b"19880214", b"1988-02-14")
        assert msa(portal.call(receiver.receive, other_refused))[1] == "AE"
        before = _rows(path)
        [patient] = before[1][2]
        [other] = before[2][2]
        found = server.client.get(SEARCH, headers=server.headers("ehr")).json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == [patient]

        assert server.erase(patient).status_code == 200
        after = _rows(path)
        assert after[1] == (ERASED, b"", [])
        assert 3 not in after  # the same patient's error: deleted, ERR texts and all
        assert after[2] == before[2] and other != patient  # another patient's messages stay
        assert after[4] == before[4]
        assert [blob for blob in files(settings.data_dir) for id in (1, 3)
                if before[id][1] in blob] == []

        again = portal.call(receiver.receive, marked("ERASE-1"))  # resent: a duplicate
        assert again == first
        found = server.client.get(SEARCH, headers=server.headers("ehr")).json()
        assert found.get("entry", []) == []
        stored = portal.call(receiver.inbox.get, 1)
        assert stored is not None and stored.state == ERASED and stored.raw == b""
    finally:
        receiver.inbox.close()


@pytest.mark.anyio
async def test_the_periodic_task_wipes_applied_messages_and_deletes_errors_past_the_period(
        settings: Settings, receiver: Receiver, ctx: Context) -> None:
    path = settings.data_dir / INBOX
    with clock.frozen(datetime(2026, 1, 1, tzinfo=UTC)) as frozen:
        applied = await receiver.receive(marked("OLD-1"))
        assert msa(await receiver.receive(marked("OLD-2").replace(b"19700512", b"1970-05-12")))[1] == "AE"
        frozen.advance(timedelta(days=20).total_seconds())
        assert msa(await receiver.receive(message("adt_a01_admit_2.hl7")))[1] == "AA"
        frozen.advance(timedelta(days=11).total_seconds())  # the first two: 31 days old
        task = asyncio.get_running_loop().create_task(keep(path, body_codec(settings), 30, period=0.01))
        try:
            for _ in range(500):
                if 2 not in _rows(path):
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
        rows = _rows(path)
        assert sorted(rows) == [1, 3]  # the error: deleted
        assert rows[1] == (APPLIED, b"", [])  # wiped, its key kept
        assert rows[3][0] == APPLIED and rows[3][1] and rows[3][2]  # within the period: whole
        assert await receiver.receive(marked("OLD-1")) == applied  # still a duplicate


@pytest.mark.anyio
async def test_a_reader_blocking_the_wal_wipe_is_reported_and_the_next_pass_wipes_it(
        settings: Settings, receiver: Receiver, ctx: Context, caplog: pytest.LogCaptureFixture) -> None:
    """While a reader holds a snapshot, the WAL cannot be truncated: the erased message's
    sealed bytes stay in its older frames. The erasure says so, and the next retention pass
    (hourly) truncates it."""
    path = settings.data_dir / INBOX
    assert msa(await receiver.receive(marked("WAL-1")))[1] == "AA"
    [(_, sealed, [patient])] = _rows(path).values()
    reader = sqlite3.connect(path)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM message").fetchone()  # a snapshot, held
        assert await receiver.inbox.forget(patient) == 1
        assert any(sealed in blob for blob in files(settings.data_dir))
        assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
                and "WAL" in r.getMessage()], caplog.text
    finally:
        reader.close()
    assert await expire(path, body_codec(settings), 30) == (0, 0)
    assert not any(sealed in blob for blob in files(settings.data_dir))


def test_a_locked_inbox_makes_the_erasures_wipe_busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inbox locked past its busy timeout (the listener writing): the wipe answers BUSY,
    the error an erasure leaves to be finished, not one that stops a run of erasures."""
    path = tmp_path / INBOX
    Inbox(path, body_codec(Settings(data_dir=tmp_path))).close()

    async def locked(self: Inbox, patient: str) -> int:
        raise sqlite3.OperationalError("database is locked")
    monkeypatch.setattr(Inbox, "forget", locked)
    with pytest.raises(FhirError) as raised:
        asyncio.run(forget_patient(path, body_codec(Settings(data_dir=tmp_path)), "p"))
    assert raised.value.kind is Kind.BUSY
