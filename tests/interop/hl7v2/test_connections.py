"""The MLLP listener holds at most FHIR_SERVER_MLLP_MAX_CONNECTIONS connections (each may hold
WINDOW frames of the message limit): one more is closed at once, logged, and the listener
takes a connection again once one ends."""

from __future__ import annotations

import asyncio

import pytest

from fhir_server.interop.hl7v2 import Listener, Receiver

from .conftest import connect, frame, message, msa

pytestmark = pytest.mark.anyio


async def test_a_connection_over_the_limit_is_closed_at_accept(
        receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    listener = Listener(receiver, "127.0.0.1", 0, 64 * 1024, max_connections=2)
    await listener.start()
    try:
        first, second = await connect(listener.bound_port), await connect(listener.bound_port)
        for connection, name in ((first, "adt_a28_add_person.hl7"), (second, "adt_a04_register.hl7")):
            await connection.send(frame(message(name)))
            assert msa(await connection.ack())[1] == "AA"
        extra = await connect(listener.bound_port)
        assert await asyncio.wait_for(extra.reader.read(), 10) == b""  # closed, nothing read
        await extra.close()
        assert "hl7v2: too many MLLP connections; one refused" in caplog.text
        await first.close()
        for _ in range(100):  # the listener sees the end of the first one
            if len(listener._connections) < 2:
                break
            await asyncio.sleep(0.02)
        again = await connect(listener.bound_port)
        await again.send(frame(message("adt_a28_add_person_2.hl7")))
        assert msa(await again.ack())[1] == "AA"
        await again.close()
        await second.close()
    finally:
        await listener.stop()
