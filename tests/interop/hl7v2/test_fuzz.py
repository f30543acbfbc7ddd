"""Hostile input over MLLP: a connection sends valid messages mutated at random (bytes
replaced, deleted, inserted, separators and non-ASCII among them). Every frame gets one
acknowledgment, AA, AE or AR; nothing of a refused message is written; the listener goes on."""

from __future__ import annotations

import random
from urllib.parse import unquote

import orjson
import pytest

from fhir_server.interop.hl7v2 import Listener
from fhir_server.services.context import Context
from fhir_server.store.base import HistoryQuery
from tests.interop.hl7v2.conftest import FS_CR, VT, connect, frame, message, msa

pytestmark = pytest.mark.anyio

TYPES = ("Patient", "Encounter", "Observation", "DiagnosticReport")
SOURCES = ("adt_a01_pam_fr_full.hl7", "adt_a01_latin1_zsegments.hl7", "oru_r01_results.hl7",
           "adt_a40_merge.hl7", "adt_a28_add_person.hl7")


def _mutated(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        at, roll = rng.randrange(len(data)), rng.random()
        if roll < 0.4:
            data[at] = rng.choice(b"|^~\\&\r0123456789AZ\xe9\x00 ")
        elif roll < 0.7:
            del data[at:at + rng.randint(1, 20)]
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
    # Framing bytes inside a message would only split it into other frames.
    return bytes(data).replace(VT, b"").replace(FS_CR[:1], b"")


async def test_mutated_messages_are_each_answered_and_nothing_refused_is_written(
        listener: Listener, ctx: Context) -> None:
    rng = random.Random(20)
    connection = await connect(listener.bound_port)
    applied: set[str] = set()
    codes: dict[str, int] = {}
    for n in range(120):
        raw = message(SOURCES[n % len(SOURCES)])
        control = raw.split(b"|")[9]
        raw = raw.replace(b"|" + control + b"|", f"|FZ{n:04d}|".encode(), 1)
        await connection.send(frame(_mutated(rng, raw)))
        fields = msa(await connection.ack())
        assert fields[1] in ("AA", "AE", "AR")
        codes[fields[1]] = codes.get(fields[1], 0) + 1
        if fields[1] == "AA":
            applied.add(fields[2])
    assert set(codes) == {"AA", "AE", "AR"}, codes  # the mutations reach every outcome
    await connection.send(frame(message("adt_a01_admit.hl7")))
    assert msa(await connection.ack())[1] == "AA"  # the listener and the connection go on
    await connection.close()
    written = set()
    for resource_type in TYPES:
        for version in (await ctx.store.history(HistoryQuery(resource_type, count=5000))).versions:
            source = orjson.loads(version.body)["meta"]["source"] if version.body else ""
            written.add(unquote(source.rsplit(":", 1)[-1]))
    assert applied - {""} <= written <= applied | {"A01-0001"}  # each AA'd message wrote
