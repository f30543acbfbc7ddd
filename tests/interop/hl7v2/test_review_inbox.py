"""Hostile review of the sealed inbox (issues 16, 20): one unreadable row (a changed byte, a
lost key) must not stop the erasure of every patient."""

from __future__ import annotations

import sqlite3

import pytest

from fhir_server.interop.hl7v2 import ERASED, ERROR, INBOX, Receiver
from fhir_server.settings import Settings

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
