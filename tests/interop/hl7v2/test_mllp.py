"""MLLP end to end over loopback against a started listener: frames split across packets,
several messages on one connection, duplicates, Latin-1, Z-segments, merge, ORU, and broken
framing answered with an AR while the listener goes on."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from fhir_server.interop.hl7v2 import Listener
from fhir_server.services.context import Context
from fhir_server.store.base import HistoryQuery
from tests.interop.hl7v2.conftest import FS_CR, VT, connect, errs, frame, message, msa

pytestmark = pytest.mark.anyio


async def test_a_frame_split_across_packets(listener: Listener, ctx: Context) -> None:
    connection = await connect(listener.bound_port)
    data = frame(message("adt_a01_admit.hl7"))
    for start in range(0, len(data), 7):  # 7-byte packets, <FS> and <CR> apart at the end
        await connection.send(data[start:start + 7])
        await asyncio.sleep(0)
    assert msa(await connection.ack())[1:3] == ["AA", "A01-0001"]
    await connection.close()
    assert await ctx.store.count("Patient") == 1


async def test_several_messages_in_one_write_get_their_acks_in_order(listener: Listener, ctx: Context) -> None:
    names = ["adt_a28_add_person.hl7", "adt_a28_add_person_2.hl7", "adt_a40_merge.hl7",
             "adt_a01_admit.hl7", "oru_r01_results.hl7"]
    connection = await connect(listener.bound_port)
    await connection.send(b"".join(frame(message(n)) for n in names))
    acks = [msa(await connection.ack()) for _ in names]
    assert [a[1:3] for a in acks] == [["AA", "A28-0001"], ["AA", "A28-0002"], ["AA", "A40-0001"],
                                      ["AA", "A01-0001"], ["AA", "R01-0001"]]
    await connection.close()
    assert await ctx.store.count("Patient") == 3 and await ctx.store.count("Observation") == 3


async def test_a_duplicate_on_another_connection_gets_the_same_ack(listener: Listener, ctx: Context) -> None:
    first, second = await connect(listener.bound_port), await connect(listener.bound_port)
    await first.send(frame(message("oru_r01_results.hl7")))
    ack = await first.ack()
    await second.send(frame(message("oru_r01_results.hl7")))
    assert await second.ack() == ack
    await first.close()
    await second.close()
    assert await ctx.store.count("Observation") == 3


async def test_latin1_accents_and_z_segments_are_kept(listener: Listener, ctx: Context) -> None:
    connection = await connect(listener.bound_port)
    raw = message("adt_a01_latin1_zsegments.hl7")
    await connection.send(frame(raw))
    ack = await connection.ack()
    assert msa(ack)[1] == "AA" and ack.split(b"\r")[0].endswith(b"|8859/1")  # answered in its charset
    await connection.close()
    [stored] = await listener.receiver.inbox.unsettled(("applied",))
    assert stored.raw == raw and b"\rZFA|DMP|Y|20250301\rZFV|" + "Établissement".encode("latin-1") in stored.raw
    [version] = (await ctx.store.history(HistoryQuery("Patient"))).versions
    assert version.body is not None
    assert orjson.loads(version.body)["name"][0] == {"family": "LEFÈVRE", "given": ["Françoise"],
                                                     "use": "official"}


async def test_broken_frames_are_refused_and_the_connection_goes_on(listener: Listener, ctx: Context) -> None:
    connection = await connect(listener.bound_port)
    await connection.send(b"MSH|no start block" + FS_CR)
    assert msa(ack := await connection.ack())[1] == "AR" and "start block" in errs(ack)[0][8]
    await connection.send(frame(b"PID|1||123"))
    assert msa(await connection.ack())[1] == "AR"
    # Noise before a frame's start is dropped; the message after it is applied.
    await connection.send(b"\r\nnoise" + frame(message("adt_a28_add_person.hl7")))
    assert msa(await connection.ack())[1] == "AA"
    await connection.close()
    assert await ctx.store.count("Patient") == 1
    assert len(await listener.receiver.inbox.unsettled(("error",))) == 1  # the PID-only one, kept


@pytest.mark.parametrize("kilobytes", [65, 200])  # read whole, or dropped as it comes
async def test_a_message_over_the_limit_is_refused_and_the_next_one_applied(
        listener: Listener, ctx: Context, kilobytes: int) -> None:
    connection = await connect(listener.bound_port)
    huge = message("adt_a28_add_person.hl7") + b"NTE|1||" + b"x" * (kilobytes * 1024) + b"\r"
    await connection.send(frame(huge))
    ack = await connection.ack()
    assert msa(ack)[1] == "AR" and "larger than 65536 bytes" in errs(ack)[0][8]
    await connection.send(frame(message("adt_a28_add_person.hl7")))
    assert msa(await connection.ack())[1] == "AA"
    await connection.close()
    assert await ctx.store.count("Patient") == 1


async def test_a_peer_leaving_mid_frame_does_not_stop_the_listener(listener: Listener, ctx: Context) -> None:
    gone = await connect(listener.bound_port)
    await gone.send(VT + message("adt_a01_admit.hl7")[:40])
    await gone.close()
    connection = await connect(listener.bound_port)
    await connection.send(frame(message("adt_a04_register.hl7")))
    assert msa(await connection.ack())[1] == "AA"
    await connection.close()
    assert await ctx.store.count("Patient") == 1


async def test_messages_sent_ahead_keep_their_order_for_one_patient(listener: Listener, ctx: Context) -> None:
    # A01, then A08 (new address, QUAL), then Z99 (the movement moved), for one patient,
    # interleaved with other patients' registrations, all sent before any ACK is read.
    others = [message("adt_a28_add_person.hl7").replace(b"|A28-0001|", f"|O{n}|".encode())
              .replace(b"200001^^^", f"{400000 + n}^^^".encode()) for n in range(6)]
    names = ["adt_a01_admit.hl7", "adt_a08_update.hl7", "adt_z99_movement_update.hl7"]
    sent = [others[0], message(names[0]), others[1], others[2], message(names[1]), others[3],
            message(names[2]), others[4], others[5]]
    connection = await connect(listener.bound_port)
    await connection.send(b"".join(frame(m) for m in sent))
    acks = [msa(await connection.ack()) for _ in sent]
    await connection.close()
    assert [a[2] for a in acks] == ["O0", "A01-0001", "O1", "O2", "A08-0001", "O3", "Z99-0001", "O4", "O5"]
    assert {a[1] for a in acks} == {"AA"}
    history = (await ctx.store.history(HistoryQuery("Patient", count=100))).versions
    versions = sorted((v.version, orjson.loads(v.body)["meta"]["source"].rsplit(":", 1)[1])
                      for v in history if v.body and b'"100001"' in v.body)
    assert versions == [(1, "A01-0001"), (2, "A08-0001"), (3, "Z99-0001")]  # applied in turn
    movements = [orjson.loads(v.body) for v in (await ctx.store.history(HistoryQuery("Encounter", count=100))).versions
                 if v.body and b"MVT-0001" in v.body]
    assert max(movements, key=lambda m: int(m["meta"]["versionId"]))["serviceProvider"]["identifier"]["value"] == "4002"


async def test_a_fault_of_the_receiver_is_answered_and_the_connection_goes_on(
        listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*_: object) -> list[bytes]:
        raise RuntimeError("bug")

    monkeypatch.setattr(listener.receiver, "receive_all", broken)
    connection = await connect(listener.bound_port)
    await connection.send(frame(message("adt_a01_admit.hl7")) + frame(message("adt_a04_register.hl7")))
    assert [msa(await connection.ack())[1] for _ in range(2)] == ["AE", "AE"]
    monkeypatch.undo()
    await connection.send(frame(message("adt_a04_register.hl7")))
    assert msa(await connection.ack())[1] == "AA"
    await connection.close()
