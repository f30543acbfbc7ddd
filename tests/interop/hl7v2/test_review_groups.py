"""Hostile review of group commit (issue 20): messages sent ahead that name one patient by
different identifiers, or in another order, are applied as they would be one by one."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fhir_server.interop.hl7v2 import Receiver
from fhir_server.interop.hl7v2.message import read
from fhir_server.services import search
from fhir_server.services.context import Context
from tests.interop.hl7v2.conftest import message, msa

pytestmark = pytest.mark.anyio
IPP = "urn:oid:1.2.250.1.999.1.1"
INS = "270056912345647^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"


def _person(control_id: str, trigger: str, pid3: str) -> bytes:
    """An A28/A31 with the control id and PID-3 given."""
    return (message("adt_a28_add_person.hl7").replace(b"|A28-0001|", f"|{control_id}|".encode())
            .replace(b"ADT^A28", f"ADT^{trigger}".encode())
            .replace(b"200001^^^CHU_DEMO&1.2.250.1.999.1.1&ISO^PI", pid3.encode()).replace(b"|PROV", b"|VALI"))


async def _patients(ctx: Context) -> list[dict[str, Any]]:
    found = await search.search(ctx, "Patient", [("_count", "100")], strict=True)
    return [orjson.loads(orjson.dumps(e["resource"])) for e in found.get("entry", [])]


async def test_one_patient_named_by_its_identifiers_in_another_order_is_one_patient(
        receiver: Receiver, ctx: Context) -> None:
    ipp = "400001^^^CHU_DEMO&1.2.250.1.999.1.1&ISO^PI"
    sent = [_person("G-1", "A28", f"{ipp}~{INS}"), _person("G-2", "A31", f"{INS}~{ipp}")]
    acks = await receiver.receive_all([(raw, read(raw)) for raw in sent], None)
    assert [msa(ack)[1] for ack in acks] == ["AA", "AA"], acks
    [patient] = await _patients(ctx)  # as if applied one by one: the A31 updates the A28's
    assert patient["meta"]["source"].endswith(":G-2")


async def test_the_same_messages_one_by_one_make_one_patient(receiver: Receiver, ctx: Context) -> None:
    ipp = "400001^^^CHU_DEMO&1.2.250.1.999.1.1&ISO^PI"
    for raw in (_person("G-1", "A28", f"{ipp}~{INS}"), _person("G-2", "A31", f"{INS}~{ipp}")):
        assert msa(await receiver.receive(raw))[1] == "AA"
    [patient] = await _patients(ctx)
    assert patient["meta"]["source"].endswith(":G-2")


async def test_one_stored_patient_reached_by_two_identifiers_in_one_group(receiver: Receiver, ctx: Context) -> None:
    ipp = "400002^^^CHU_DEMO&1.2.250.1.999.1.1&ISO^PI"
    assert msa(await receiver.receive(_person("S-1", "A28", f"{ipp}~{INS}")))[1] == "AA"
    sent = [_person("S-2", "A31", ipp), _person("S-3", "A31", INS)]
    acks = await receiver.receive_all([(raw, read(raw)) for raw in sent], None)
    assert [msa(ack)[1] for ack in acks] == ["AA", "AA"], acks
    # As one by one: S-2 keeps the IPP alone on the record, so S-3's INS then names no one.
    assert sorted((p["meta"]["source"][-3:], p["meta"]["versionId"], len(p["identifier"]))
                  for p in await _patients(ctx)) == [("S-2", "2", 1), ("S-3", "1", 1)]


async def test_a_merge_sent_ahead_between_messages_for_the_record_it_retires(
        receiver: Receiver, ctx: Context) -> None:
    before = [message("adt_a28_add_person.hl7"), message("adt_a28_add_person_2.hl7")]
    stale = message("adt_a28_add_person_2.hl7").replace(b"|A28-0002|", b"|A31-0002|").replace(
        b"ADT^A28", b"ADT^A31")  # names the record the merge retires
    other = _person("M-1", "A28", "400003^^^CHU_DEMO&1.2.250.1.999.1.1&ISO^PI")
    sent = [*before, message("adt_a40_merge.hl7"), stale, other]
    acks = await receiver.receive_all([(raw, read(raw)) for raw in sent], None)
    assert [msa(ack)[1] for ack in acks] == ["AA", "AA", "AA", "AE", "AA"], acks
    retired = [p for p in await _patients(ctx) if not p.get("active", True)]
    assert len(retired) == 1 and retired[0]["meta"]["source"].endswith(":A40-0001")
