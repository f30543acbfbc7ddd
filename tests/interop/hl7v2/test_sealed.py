"""The inbox at rest: no marker of a patient in hl7v2.db or its WAL in any form a message can
carry it (UTF-8, Latin-1, HL7-escaped); a sealed field moved to another row or changed fails
to open; a file written before sealing is sealed when opened, and still replays."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fhir_server.app import body_codec
from fhir_server.crypto import PlainCodec, UnreadableBody
from fhir_server.interop.hl7v2 import ERROR, INBOX, Inbox, Listener, Receiver, SealedInboxError
from fhir_server.services.context import Context
from fhir_server.settings import Settings

from .conftest import connect, frame, message, msa

pytestmark = pytest.mark.anyio

NAME = "ZÉBULONMARQUEUR"
INS = "2700569123456"  # a marker in PID-3, as an INS would be
NOTE = "Tumeur|marqueur"  # a field delimiter: sent escaped (\F\)


def marked(control_id: str) -> bytes:
    """An admission naming the markers, in UTF-8."""
    raw = message("adt_a01_admit.hl7").decode()
    return (raw.replace("A01-0001", control_id).replace("MARTIN^Hélène", f"{NAME}^Hélène")
            .replace("100001^^^", f"{INS}^^^").replace("12 rue des Lilas", NOTE.replace("|", "\\F\\"))
            .encode())


# The inbox's tables as written before sealing.
PLAINTEXT_SCHEMA = """
    CREATE TABLE message (id INTEGER PRIMARY KEY, sender TEXT, control_id TEXT,
        received TEXT NOT NULL, peer TEXT, raw BLOB NOT NULL, state TEXT NOT NULL,
        ack BLOB, reason TEXT, settled TEXT);
    CREATE UNIQUE INDEX message_key ON message (sender, control_id) WHERE sender IS NOT NULL;
    CREATE INDEX message_state ON message (state);"""


def forms() -> list[bytes]:
    """Each marker as UTF-8, Latin-1 and HL7-escaped."""
    found = []
    for text in (NAME, INS, NOTE, NAME.replace("É", "E")):
        found += [text.encode(), text.encode("latin-1"), text.replace("|", "\\F\\").encode()]
        found.append(text.replace("É", "\\XC9\\").encode())  # an escaped Latin-1 character
    return sorted(set(found))


def files(data_dir: Path) -> list[bytes]:
    return [path.read_bytes() for path in data_dir.glob(INBOX + "*")]


async def test_no_marker_reaches_the_inbox_file_or_its_wal(settings: Settings, receiver: Receiver,
                                                            ctx: Context) -> None:
    ack = await receiver.receive(marked("SEAL-1"))
    assert msa(ack)[1] == "AA"
    refused = marked("SEAL-2").replace(b"19700512", b"1970-05-12")  # an AE quoting PID-7
    assert msa(await receiver.receive(refused))[1] == "AE"
    assert [m for m in forms() for blob in files(settings.data_dir) if m in blob] == []
    # what `hl7 errors|replay` read is readable
    [error] = await receiver.inbox.unsettled((ERROR,))
    assert NAME.encode() in error.raw and error.reason and "PID-7" in error.reason
    assert error.ack is not None and b"PID" in error.ack
    # the listener's way in too (stopping it closes the inbox)
    listener_ack = None
    listener = Listener(receiver, "127.0.0.1", 0, 64 * 1024, max_connections=64)
    await listener.start()
    try:
        connection = await connect(listener.bound_port)
        await connection.send(frame(marked("SEAL-3")))
        listener_ack = await connection.ack()
        await connection.close()
    finally:
        await listener.stop()
    assert msa(listener_ack)[1] == "AA"
    assert [m for m in forms() for blob in files(settings.data_dir) if m in blob] == []


async def test_a_field_moved_to_another_row_or_changed_fails_to_open(settings: Settings,
                                                                       receiver: Receiver) -> None:
    await receiver.receive(marked("MOVE-1"))
    await receiver.receive(marked("MOVE-2"))
    with sqlite3.connect(settings.data_dir / INBOX) as db:
        db.execute("UPDATE message SET ack = raw WHERE id = 1")  # another field of its row
    with pytest.raises(UnreadableBody):
        await receiver.inbox.get(1)
    with sqlite3.connect(settings.data_dir / INBOX) as db:
        db.execute("UPDATE message SET ack = NULL WHERE id = 1")
    assert await receiver.inbox.get(1) is not None  # as sealed, it opens
    with sqlite3.connect(settings.data_dir / INBOX) as db:
        [(sealed,)] = db.execute("SELECT raw FROM message WHERE id = 2").fetchall()
        db.execute("UPDATE message SET raw = ? WHERE id = 1", (sealed,))  # another row's
        db.execute("UPDATE message SET raw = ? WHERE id = 2",
                   (sealed[:40] + bytes([sealed[40] ^ 1]) + sealed[41:],))  # one bit changed
    for id in (1, 2):
        with pytest.raises(UnreadableBody):
            await receiver.inbox.get(id)


async def test_a_plaintext_inbox_is_sealed_when_opened_and_its_messages_replay(
        settings: Settings, receiver: Receiver, ctx: Context, tmp_path: Path) -> None:
    old = tmp_path / "old" / INBOX
    old.parent.mkdir()
    with sqlite3.connect(old) as db:  # the schema and rows as the inbox wrote them before sealing
        db.executescript(PLAINTEXT_SCHEMA)
        db.execute("INSERT INTO message VALUES (1, 'HIS_CHU|CHU_DEMO', 'OLD-1', '2026-01-01T00:00:00Z',"
                   " NULL, ?, 'error', ?, ?, '2026-01-01T00:00:00Z')",
                   (marked("OLD-1"), b"MSA|AE|OLD-1", f"PID-5 {NAME} refused"))
    db.close()
    inbox = Inbox(old, body_codec(settings))
    try:
        assert [m for m in forms() for blob in [old.read_bytes(), *files(old.parent)] if m in blob] == []
        stored = await inbox.get(1)
        assert stored is not None and stored.raw == marked("OLD-1") and stored.ack == b"MSA|AE|OLD-1"
        assert stored.reason == f"PID-5 {NAME} refused"
        again = Inbox(old, body_codec(settings))  # opened again: not sealed twice
        assert (await again.get(1)) == stored
        again.close()
        assert msa(await receiver.replay(stored))[1] == "AA"
    finally:
        inbox.close()


async def test_a_sealed_inbox_is_not_opened_with_encryption_off(settings: Settings, tmp_path: Path) -> None:
    """Opened with encryption off, it would take plaintext rows that a later opening with
    encryption on would neither seal (the file says sealed) nor open: refused, untouched."""
    path = tmp_path / INBOX
    sealed = Inbox(path, body_codec(settings))
    await sealed.receive("HIS_CHU|CHU_DEMO", "SEAL-OFF-1", marked("SEAL-OFF-1"), None)
    sealed.close()
    before = files(tmp_path)
    with pytest.raises(SealedInboxError, match="encryption is off"):
        Inbox(path, PlainCodec())
    assert files(tmp_path) == before
    reopened = Inbox(path, body_codec(settings))  # with encryption on, it reads as before
    try:
        [(stored, new)] = await reopened.receive_all([("HIS_CHU|CHU_DEMO", "SEAL-OFF-1", b"", None)])
        assert not new and stored.raw == marked("SEAL-OFF-1")
    finally:
        reopened.close()
