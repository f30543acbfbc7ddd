"""The inbox keeps each message once per (sender, control id), even when two processes (two
`serve` workers) receive the same message at once; its file is the owner's only."""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path

import pytest

from fhir_server.crypto import PlainCodec
from fhir_server.interop.hl7v2 import Inbox

pytestmark = pytest.mark.anyio


async def test_two_inboxes_on_one_file_store_a_message_once(tmp_path: Path) -> None:
    first, second = Inbox(tmp_path / "hl7v2.db", PlainCodec()), Inbox(tmp_path / "hl7v2.db", PlainCodec())
    try:
        results = await asyncio.gather(*[inbox.receive("APP|FAC", f"C{n % 5}", b"MSH|...", None)
                                         for n in range(40) for inbox in (first, second)])
        assert sum(new for _, new in results) == 5
        assert {stored.id for stored, _ in results} == {stored.id for stored, new in results if new}
        unkeyed = [await first.receive(None, None, b"garbage", None) for _ in range(2)]
        assert [new for _, new in unkeyed] == [True, True]  # unreadable ones are each kept
    finally:
        first.close()
        second.close()
    assert stat.S_IMODE((tmp_path / "hl7v2.db").stat().st_mode) == 0o600


async def test_callers_of_flush_share_a_sync_and_a_flushed_inbox_is_not_synced_again(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "hl7v2.db", PlainCodec())
    syncs = []
    sync = inbox._sync

    def counted() -> None:
        syncs.append(1)
        time.sleep(0.05)
        sync()

    inbox._sync = counted  # type: ignore[method-assign]
    try:
        await inbox.receive_all([("APP|FAC", f"C{n}", b"MSH|...", None) for n in range(3)])
        await asyncio.gather(*[inbox.flush() for _ in range(10)])
        assert len(syncs) == 1
        await inbox.flush()  # nothing committed since
        assert len(syncs) == 1
        await inbox.settle_all([(1, "applied", b"MSA|AA", None)])
        await asyncio.gather(*[inbox.flush() for _ in range(5)])
        assert len(syncs) == 2
    finally:
        inbox.close()
