"""Fixtures of the HL7 v2 tests: the messages under messages/, a Receiver on a temporary
store (audited as the server audits), and a started MLLP listener on a free loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from fhir_server.access import server_principal
from fhir_server.app import body_codec, build_context, open_context, open_store
from fhir_server.audit.chain import Chain
from fhir_server.audit.recorder import AuditRecorder
from fhir_server.interop.hl7v2 import Listener, Receiver, receiver_for
from fhir_server.services.context import Context
from fhir_server.settings import Settings
from fhir_server.store.routing import RoutingStore
from tests.store.conftest import DOUBLE, STORES

MESSAGES = Path(__file__).parent / "messages"
VT, FS_CR = b"\x0b", b"\x1c\r"


def message(name: str) -> bytes:
    """A message file as sent: segments ended by <CR> (the files keep one per line)."""
    return (MESSAGES / name).read_bytes().replace(b"\n", b"\r")


def frame(raw: bytes) -> bytes:
    return VT + raw + FS_CR


def msa(ack: bytes) -> list[str]:
    """The fields of the acknowledgment's MSA segment."""
    line = next(s for s in ack.split(b"\r") if s.startswith(b"MSA"))
    return line.decode("latin-1").split("|")


def errs(ack: bytes) -> list[list[str]]:
    return [s.decode("latin-1").split("|") for s in ack.split(b"\r") if s.startswith(b"ERR")]


@pytest.fixture(params=["sqlite", DOUBLE])
async def ctx(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Context]:
    """The service layer as the server itself, on SQLite and on the MongoDB store's double."""
    if request.param == "sqlite":
        async with open_context(settings) as context:
            yield context
        return
    main = await asyncio.to_thread(STORES[DOUBLE], settings.data_dir)
    store = RoutingStore(main, open_store(settings.audit_store_url))
    await store.open()
    yield replace(build_context(settings, store), principal=server_principal("test"))
    await store.close()


@pytest.fixture
async def receiver(settings: Settings, ctx: Context) -> AsyncIterator[Receiver]:
    assert isinstance(ctx.store, RoutingStore)
    recorder = AuditRecorder(ctx.store.audit, Chain(settings.data_dir / "audit-chain.db"), ctx.store)
    receiver = receiver_for(settings, ctx, recorder, body_codec(settings))
    yield receiver
    receiver.inbox.close()
    recorder.close()


@pytest.fixture
async def listener(receiver: Receiver) -> AsyncIterator[Listener]:
    listener = Listener(receiver, "127.0.0.1", 0, 64 * 1024, max_connections=64)
    await listener.start()
    yield listener
    await listener.stop()


class Connection:
    """An MLLP client: sends bytes as given, reads acknowledgment frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def ack(self) -> bytes:
        data = await asyncio.wait_for(self.reader.readuntil(FS_CR), 30)
        assert data.startswith(VT)
        return data[1:-2]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def connect(port: int) -> Connection:
    return Connection(*await asyncio.open_connection("127.0.0.1", port))
