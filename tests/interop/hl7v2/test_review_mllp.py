"""Hostile review of the MLLP listener (issue 20) over loopback: the size limit is the
message's, wherever the packets end."""

from __future__ import annotations

import asyncio

import pytest

from fhir_server.interop.hl7v2 import Listener
from fhir_server.services.context import Context
from tests.interop.hl7v2.conftest import VT, connect, message, msa

pytestmark = pytest.mark.anyio


async def test_a_message_of_exactly_the_limit_whose_end_block_comes_alone(
        listener: Listener, ctx: Context) -> None:
    head = message("adt_a28_add_person.hl7") + b"NTE|1||"
    raw = head + b"x" * (listener.limit - len(head) - 1) + b"\r"
    assert len(raw) == listener.limit
    connection = await connect(listener.bound_port)
    await connection.send(VT + raw + b"\x1c")  # <FS>, then <CR> in a packet of its own
    await asyncio.sleep(0.3)
    await connection.send(b"\r")
    assert msa(await connection.ack())[1] == "AA"
    await connection.close()
    assert await ctx.store.count("Patient") == 1


async def test_msa_2_is_the_control_id_as_sent_even_escaped(listener: Listener, ctx: Context) -> None:
    # MSH-10 "R\E\7" is the control id R\7: MSA-2 must say the same, not escape it again.
    raw = message("adt_a28_add_person.hl7").replace(b"|A28-0001|", b"|R\\E\\7|")
    connection = await connect(listener.bound_port)
    await connection.send(VT + raw + b"\x1c\r")
    ack = await connection.ack()
    await connection.close()
    assert msa(ack)[1:3] == ["AA", "R\\E\\7"]


async def test_a_peer_trickling_a_frame_is_disconnected(
        listener: Listener, ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fhir_server.interop.hl7v2.listener.FRAME_TIMEOUT", 0.6)
    done = await connect(listener.bound_port)  # a frame answered, then idle past the timeout
    await done.send(VT + message("adt_a28_add_person.hl7") + b"\x1c\r")
    assert msa(await done.ack())[1] == "AA"
    slow = await connect(listener.bound_port)
    trickled = VT + message("adt_a01_admit.hl7")
    closed = False
    for byte in range(60):  # a byte every 0.05 s: never idle, never done
        try:
            await slow.send(trickled[byte:byte + 1])
        except ConnectionError:
            closed = True
            break
        if slow.reader.at_eof() or await _closed(slow.reader):
            closed = True
            break
    slow.writer.close()
    assert closed
    await asyncio.sleep(0.3)
    await done.send(VT + message("adt_a04_register.hl7") + b"\x1c\r")  # idle is not closed
    assert msa(await done.ack())[1] == "AA"
    await done.close()


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 0.05) == b""
    except TimeoutError:
        return False


async def test_a_duplicate_in_one_packet_and_a_bad_message_among_five(
        listener: Listener, ctx: Context) -> None:
    first = message("adt_a28_add_person.hl7")
    sent = [first, message("adt_a04_register.hl7"), message("bad_date.hl7"), first,
            message("adt_a28_add_person_2.hl7")]
    connection = await connect(listener.bound_port)
    await connection.send(b"".join(VT + raw + b"\x1c\r" for raw in sent))  # one packet
    acks = [await connection.ack() for _ in sent]
    await connection.close()
    assert [msa(ack)[1:3] for ack in acks] == [
        ["AA", "A28-0001"], ["AA", "A04-0001"], ["AE", "BAD-0002"], ["AA", "A28-0001"], ["AA", "A28-0002"]]
    assert acks[3] == acks[0]  # the duplicate: the first answer, not applied again
    assert await ctx.store.count("Patient") == 3
