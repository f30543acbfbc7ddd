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
