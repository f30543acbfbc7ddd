"""Hostile review of the sealed inbox (issues 16, 20): one unreadable row (a changed byte, a
lost key) must not stop the erasure of every patient."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from fhir_server import clock
from fhir_server.interop.hl7v2 import ERASED, ERROR, INBOX, Receiver
from fhir_server.settings import Settings

from fhir_server.interop.hl7v2.message import read

from .conftest import message, msa
from .test_sealed import marked

pytestmark = pytest.mark.anyio


async def test_an_unreadable_message_in_error_does_not_stop_an_erasure(
        settings: Settings, receiver: Receiver) -> None:
    assert msa(await receiver.receive(marked("ER-1")))[1] == "AA"
    assert msa(await receiver.receive(message("bad_date.hl7")))[1] == "AE"  # another patient's
    with sqlite3.connect(settings.data_dir / INBOX) as db:
        [(patient,)] = db.execute("SELECT patient FROM message_patient").fetchall()
        [(id, sealed)] = db.execute("SELECT id, raw FROM message WHERE state = ?", (ERROR,)).fetchall()
        db.execute("UPDATE message SET raw = ? WHERE id = ?",
                   (sealed[:40] + bytes([sealed[40] ^ 1]) + sealed[41:], id))
    db.close()
    assert await receiver.inbox.forget(patient) == 1
    with sqlite3.connect(settings.data_dir / INBOX) as db:
        states = dict(db.execute("SELECT control_id, state FROM message"))
    db.close()
    assert states == {"ER-1": ERASED, "BAD-0002": ERROR}


async def test_a_resent_message_whose_row_fails_to_open_fails_alone(
        settings: Settings, receiver: Receiver) -> None:
    assert msa(await receiver.receive(marked("ER-2")))[1] == "AA"
    with sqlite3.connect(settings.data_dir / INBOX) as db:
        [(sealed,)] = db.execute("SELECT ack FROM message WHERE control_id = 'ER-2'").fetchall()
        db.execute("UPDATE message SET ack = ? WHERE control_id = 'ER-2'",
                   (sealed[:40] + bytes([sealed[40] ^ 1]) + sealed[41:],))
    db.close()
    sent = [marked("ER-2"), message("adt_a28_add_person.hl7"), message("adt_a04_register.hl7")]
    acks = await receiver.receive_all([(raw, read(raw)) for raw in sent], None)
    assert [msa(ack)[1] for ack in acks] == ["AE", "AA", "AA"]  # the others not held back by it


async def test_a_deleted_message_id_is_never_given_again(settings: Settings, receiver: Receiver) -> None:
    # Sealed fields are bound to their row id: an id given again would open the ciphertext
    # of a deleted message (an erased patient's, copied aside) put back on the new row.
    with clock.frozen(datetime(2026, 1, 1, tzinfo=UTC)) as frozen:
        assert msa(await receiver.receive(message("adt_a28_add_person.hl7")))[1] == "AA"
        assert msa(await receiver.receive(message("bad_date.hl7")))[1] == "AE"
        with sqlite3.connect(settings.data_dir / INBOX) as db:
            [(deleted, sealed)] = db.execute("SELECT id, raw FROM message WHERE state = ?", (ERROR,)).fetchall()
        db.close()
        frozen.advance(timedelta(days=31).total_seconds())
        assert await receiver.inbox.expire(30) == (1, 1)
        assert msa(await receiver.receive(message("adt_a04_register.hl7")))[1] == "AA"
    with sqlite3.connect(settings.data_dir / INBOX) as db:
        ids = [id for (id,) in db.execute("SELECT id FROM message")]
        db.execute("UPDATE message SET raw = ? WHERE id = ?", (sealed, max(ids)))
    db.close()
    assert deleted not in ids
    with pytest.raises(Exception, match="cannot be decrypted"):
        await receiver.inbox.get(max(ids))


async def test_the_errors_are_listed_when_one_of_them_fails_to_open(
        settings: Settings, receiver: Receiver) -> None:
    assert msa(await receiver.receive(message("bad_date.hl7")))[1] == "AE"
    assert msa(await receiver.receive(message("bad_missing_pid3.hl7")))[1] == "AE"
    with sqlite3.connect(settings.data_dir / INBOX) as db:
        db.execute("UPDATE message SET reason = raw WHERE control_id = 'BAD-0002'")  # another field's
    db.close()
    listed = {m.control_id: m for m in await receiver.inbox.unsettled((ERROR,))}
    assert len(listed) == 2 and listed["BAD-0002"].reason is not None
    assert "cannot be decrypted" in listed["BAD-0002"].reason and listed["BAD-0002"].raw == b""
    assert listed["BAD-0002"].state == ERROR
