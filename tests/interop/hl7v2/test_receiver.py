"""A Receiver on a real store: each message is one transaction through the service layer,
acknowledged AA only once committed, audited as its sender's; duplicates and resent
messages change nothing; bad messages leave the store untouched and stay in the inbox."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from typing import Any

import orjson
import pytest

from fhir_server.interop.hl7v2 import ERROR, RECEIVED, Receiver
from fhir_server.interop.hl7v2.identifiers import stored_with
from fhir_server.interop.hl7v2.message import read
from fhir_server.interop.hl7v2.problems import Refused
from fhir_server.services import bundle, crud, search
from fhir_server.services.context import Context, Payload
from fhir_server.store.base import HistoryQuery
from fhir_server.store.routing import RoutingStore
from tests.interop.hl7v2.conftest import errs, message, msa

pytestmark = pytest.mark.anyio
IPP = "urn:oid:1.2.250.1.999.1.1"
TYPES = ("Patient", "Encounter", "Observation", "DiagnosticReport")


async def _find(ctx: Context, resource_type: str, params: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    found = await search.search(ctx, resource_type, [*(params or []), ("_count", "1000")], strict=True)
    return [orjson.loads(orjson.dumps(e["resource"])) for e in found.get("entry", [])]


async def _one(ctx: Context, resource_type: str, system: str, value: str) -> dict[str, Any]:
    [found] = await _find(ctx, resource_type, [("identifier", f"{system}|{value}")])
    return found


async def _versions(ctx: Context) -> dict[str, int]:
    """How many versions of each mapped type the store holds: any write shows."""
    return {t: len((await ctx.store.history(HistoryQuery(t, count=1000))).versions) for t in TYPES}


async def _send(receiver: Receiver, name: str, code: str = "AA") -> bytes:
    ack = await receiver.receive(message(name), "192.0.2.7")
    assert msa(ack)[1] == code, ack
    return ack


async def test_admission_update_movement_update_and_cancel(receiver: Receiver, ctx: Context) -> None:
    await _send(receiver, "adt_a01_admit.hl7")
    patient = await _one(ctx, "Patient", IPP, "100001")
    assert patient["name"][0]["given"] == ["Hélène", "Marie"]
    assert patient["meta"]["source"] == "urn:hl7v2:HIS_CHU%7CCHU_DEMO%5E1.2.250.1.999.1%5EISO:A01-0001"
    visit = await _one(ctx, "Encounter", "urn:oid:1.2.250.1.999.1.2", "V0001")
    movement = await _one(ctx, "Encounter", "urn:oid:1.2.250.1.999.1.3", "MVT-0001")
    assert visit["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert movement["partOf"] == {"reference": f"Encounter/{visit['id']}"}

    await _send(receiver, "adt_a08_update.hl7")
    updated = await _one(ctx, "Patient", IPP, "100001")
    assert updated["id"] == patient["id"] and updated["meta"]["versionId"] == "2"
    assert updated["address"][0]["line"] == ["3 place Bellecour"]

    await _send(receiver, "adt_z99_movement_update.hl7")
    moved = await _one(ctx, "Encounter", "urn:oid:1.2.250.1.999.1.3", "MVT-0001")
    assert moved["id"] == movement["id"]
    assert moved["period"]["start"] == "2025-03-01T10:30:00+01:00"
    assert moved["serviceProvider"]["identifier"]["value"] == "4002"

    await _send(receiver, "adt_a11_cancel_admit.hl7")
    assert (await _one(ctx, "Encounter", "urn:oid:1.2.250.1.999.1.2", "V0001"))["status"] == "cancelled"
    assert (await _one(ctx, "Encounter", "urn:oid:1.2.250.1.999.1.3", "MVT-0001"))["status"] == "entered-in-error"
    assert (await _one(ctx, "Patient", IPP, "100001"))["meta"]["versionId"] == "3"  # A11: created if absent only
    assert len(await _find(ctx, "Patient")) == 1 and len(await _find(ctx, "Encounter")) == 2


async def test_registration_and_person_information(receiver: Receiver, ctx: Context) -> None:
    await _send(receiver, "adt_a04_register.hl7")
    assert (await _one(ctx, "Encounter", "urn:oid:1.2.250.1.999.1.2", "V0002"))["class"]["code"] == "AMB"
    await _send(receiver, "adt_a28_add_person.hl7")
    await _send(receiver, "adt_a31_update_person.hl7")
    person = await _one(ctx, "Patient", IPP, "200001")
    assert person["name"][0]["given"] == ["Jeanne", "Louise"]
    assert person["identifier"][1]["system"] == "urn:oid:1.2.250.1.213.1.4.8"
    assert len(await _find(ctx, "Encounter")) == 2  # A04's visit and movement; A28/A31: none


async def test_a_duplicate_gets_the_same_ack_and_changes_nothing(receiver: Receiver, ctx: Context) -> None:
    first = await _send(receiver, "adt_a01_admit.hl7")
    before = await _versions(ctx)
    assert await _send(receiver, "adt_a01_admit.hl7") == first
    assert await _versions(ctx) == before


async def test_the_same_message_under_a_new_control_id_adds_no_resource(receiver: Receiver, ctx: Context) -> None:
    await _send(receiver, "oru_r01_results.hl7")
    again = message("oru_r01_results.hl7").replace(b"|R01-0001|", b"|R01-0002|")
    assert msa(await receiver.receive(again))[1] == "AA"
    assert {t: len(await _find(ctx, t)) for t in TYPES} == {
        "Patient": 1, "Encounter": 1, "Observation": 3, "DiagnosticReport": 1}


async def test_oru_stores_the_report_and_each_observation(receiver: Receiver, ctx: Context) -> None:
    await _send(receiver, "adt_a01_admit.hl7")
    patient = await _one(ctx, "Patient", IPP, "100001")
    await _send(receiver, "oru_r01_results.hl7")
    assert (await _one(ctx, "Patient", IPP, "100001"))["meta"]["versionId"] == "1"  # matched, not rewritten
    report = await _one(ctx, "DiagnosticReport", "urn:oid:1.2.250.1.999.1.7", "LAB-5501")
    observations = await _find(ctx, "Observation", [("_sort", "identifier")])
    assert len(observations) == 3
    assert sorted(r["reference"] for r in report["result"]) == sorted(
        f"Observation/{o['id']}" for o in observations)
    assert {o["subject"]["reference"] for o in observations} == {f"Patient/{patient['id']}"}
    assert report["subject"] == {"reference": f"Patient/{patient['id']}"}


async def test_merge_retires_the_old_record_and_links_both(receiver: Receiver, ctx: Context) -> None:
    await _send(receiver, "adt_a28_add_person.hl7")
    await _send(receiver, "adt_a28_add_person_2.hl7")
    old = await _one(ctx, "Patient", IPP, "200002")
    await _send(receiver, "adt_a40_merge.hl7")
    survivor = await _one(ctx, "Patient", IPP, "200001")
    retired = await _one(ctx, "Patient", IPP, "200002")
    assert retired["id"] == old["id"] and retired["active"] is False
    assert retired["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}]
    assert survivor["active"] is True
    assert survivor["link"] == [{"other": {"reference": f"Patient/{old['id']}"}, "type": "replaces"}]
    assert retired["name"] == old["name"]  # the old record keeps what it held


async def test_a_merge_of_an_unknown_record_is_refused_and_changes_nothing(receiver: Receiver, ctx: Context) -> None:
    await _send(receiver, "adt_a28_add_person.hl7")
    before = await _versions(ctx)
    ack = await _send(receiver, "adt_a40_merge.hl7", "AE")
    [err] = errs(ack)
    assert err[2] == "MRG^1^1^1" and err[3].startswith("204^")
    assert await _versions(ctx) == before
    # Once the missing record exists, replaying the kept message applies it.
    await _send(receiver, "adt_a28_add_person_2.hl7")
    [kept] = [m for m in await receiver.inbox.unsettled() if m.control_id == "A40-0001"]
    assert msa(await receiver.replay(kept))[1] == "AA"
    assert (await _one(ctx, "Patient", IPP, "200002"))["active"] is False
    assert (await receiver.inbox.get(kept.id)).state == "applied"  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "code", "where"), [
    ("bad_missing_pid3.hl7", "AE", "PID^1^3^1"),
    ("bad_date.hl7", "AE", "PID^1^7^1"),
    ("bad_version.hl7", "AR", "MSH^1^12^1"),
    ("bad_unknown_trigger.hl7", "AR", "MSH^1^9^1^2"),
])
async def test_bad_messages_change_nothing_and_are_kept(receiver: Receiver, ctx: Context, name: str,
                                                        code: str, where: str) -> None:
    ack = await _send(receiver, name, code)
    [err] = errs(ack)
    assert err[2] == where and err[4] == "E" and err[8]
    assert await _versions(ctx) == dict.fromkeys(TYPES, 0)
    [kept] = await receiver.inbox.unsettled((ERROR,))
    assert kept.raw == message(name) and kept.reason == err[8].replace("\\S\\", "^")


async def test_a_refusal_by_the_service_layer_is_located_and_nothing_is_half_applied(
        receiver: Receiver, ctx: Context) -> None:
    # Two stored patients share the IPP: the conditional update cannot choose (412).
    twin = {"resourceType": "Patient", "identifier": [{"system": IPP, "value": "100001"}]}
    for _ in range(2):
        await crud.create(ctx, "Patient", Payload(dict(twin), dict(twin)))
    ack = await _send(receiver, "adt_a01_admit.hl7", "AE")
    [err] = errs(ack)
    assert err[2] == "PID^1" and err[3].startswith("205^") and "more than one Patient" in err[8]
    assert await ctx.store.count("Encounter") == 0  # the visit and movement were not written either


@pytest.mark.parametrize(("old", "new", "where", "reason"), [
    (b"270056912345647^", b"270056912345611^", "PID^1^3^1", "Wrong INS-NIR key 11"),  # wrong NIR key
    (b"|19700512|F|", b"||F|", "PID^1^7^1", "The birth date is missing"),  # a QUAL identity's trait
    (b"|VALI\r", b"|VALI~DOUTE\r", "PID^1^32^1", "A doubtful identity cannot be VALI"),  # RNIV
])
async def test_a_validation_refusal_names_the_field_and_keeps_warnings_as_warnings(
        receiver: Receiver, ctx: Context, old: bytes, new: bytes, where: str, reason: str) -> None:
    """ERR-2 names the field the refused element came from; ERR-4 is W for a warning of the
    validator (the INS on a VALI identity), and MSA-3 repeats the first error, not a warning."""
    raw = message("adt_a01_admit.hl7").replace(old, new)
    raw = raw.replace(b"|VALI", b"|QUAL") if b"19700512" not in raw else raw
    ack = await receiver.receive(raw, "192.0.2.7")
    assert msa(ack)[1] == "AE" and reason in msa(ack)[3]
    found = {(e[2], e[4]) for e in errs(ack) if reason in e[8]}
    assert found == {(where, "E")}
    assert all(e[4] in ("E", "W") for e in errs(ack))
    if b"|VALI" in raw:
        assert any(e[4] == "W" and "qualified identity only" in e[8] for e in errs(ack))
    assert await _versions(ctx) == dict.fromkeys(TYPES, 0)


async def test_each_message_is_audited_as_a_transaction_of_its_sender(receiver: Receiver, ctx: Context) -> None:
    await _send(receiver, "adt_a01_admit.hl7")
    patient = await _one(ctx, "Patient", IPP, "100001")
    assert isinstance(ctx.store, RoutingStore)
    events = [orjson.loads(v.body) for v in (await ctx.store.audit.history(
        HistoryQuery("AuditEvent", count=100))).versions if v.body]
    [event] = [e for e in events if e["subtype"][0]["code"] == "transaction"]
    [agent] = event["agent"]
    assert agent["name"] == "mllp:HIS_CHU|CHU_DEMO^1.2.250.1.999.1^ISO" and agent["altId"] == "mllp"
    assert agent["network"]["address"] == "192.0.2.7"
    assert {"reference": f"Patient/{patient['id']}"} in [e["what"] for e in event["entity"]]
    assert event["outcome"] == "0"


async def test_a_message_received_but_never_committed_is_applied_once_when_resent(
        receiver: Receiver, ctx: Context) -> None:
    raw = message("adt_a01_admit.hl7")
    stored, new = await receiver.inbox.receive("HIS_CHU|CHU_DEMO^1.2.250.1.999.1^ISO", "A01-0001", raw, None)
    assert new and stored.state == RECEIVED  # as a stop after receipt leaves it
    assert msa(await receiver.receive(raw))[1] == "AA"
    assert (await _versions(ctx))["Patient"] == 1
    assert (await receiver.inbox.get(stored.id)).state == "applied"  # type: ignore[union-attr]


async def test_a_message_committed_but_never_settled_is_not_applied_again(
        receiver: Receiver, ctx: Context) -> None:
    await _send(receiver, "adt_a01_admit.hl7")
    before = await _versions(ctx)
    [stored] = [m for m in await receiver.inbox.unsettled(("applied",))]
    # As a stop between the commit and the inbox's update leaves it.
    receiver.inbox._db.execute("UPDATE message SET state = 'received', ack = NULL WHERE id = ?", (stored.id,))
    receiver.inbox._db.commit()
    assert msa(await receiver.receive(message("adt_a01_admit.hl7")))[1] == "AA"
    assert await _versions(ctx) == before


async def test_a_fault_while_applying_is_an_ae_and_the_message_is_kept(
        receiver: Receiver, ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*_: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("fhir_server.interop.hl7v2.receiver.bundle.transaction", broken)
    ack = await _send(receiver, "adt_a01_admit.hl7", "AE")
    assert errs(ack)[0][3].startswith("207^") and "disk on fire" not in ack.decode()
    monkeypatch.undo()
    [kept] = await receiver.inbox.unsettled((ERROR,))
    assert msa(await receiver.replay(kept))[1] == "AA"
    assert await ctx.store.count("Patient") == 1


async def test_a_stay_from_pre_admission_to_discharge_and_its_cancellations(receiver: Receiver, ctx: Context) -> None:
    visit_system, movement_system = "urn:oid:1.2.250.1.999.1.2", "urn:oid:1.2.250.1.999.1.3"

    async def visit() -> dict[str, Any]:
        return await _one(ctx, "Encounter", visit_system, "V5001")

    await _send(receiver, "adt_a05_preadmit.hl7")
    assert (await visit())["status"] == "planned"
    await _send(receiver, "adt_a01_admit_2.hl7")
    assert (await visit())["status"] == "in-progress"
    await _send(receiver, "adt_a02_transfer.hl7")
    assert (await visit())["location"][0]["location"]["display"] == "REA"
    transfer = await _one(ctx, "Encounter", movement_system, "MVT-5002")
    assert transfer["status"] == "in-progress" and transfer["serviceProvider"]["identifier"]["value"] == "4010"
    await _send(receiver, "adt_a12_cancel_transfer.hl7")
    assert (await visit())["location"][0]["location"]["display"] == "CHIR"
    assert (await _one(ctx, "Encounter", movement_system, "MVT-5002"))["status"] == "entered-in-error"
    await _send(receiver, "adt_a06_to_inpatient.hl7")
    assert (await visit())["class"]["code"] == "IMP"
    await _send(receiver, "adt_a07_to_outpatient.hl7")
    assert (await visit())["class"]["code"] == "AMB"
    await _send(receiver, "adt_a03_discharge.hl7")
    discharged = await visit()
    assert discharged["status"] == "finished" and discharged["period"]["end"] == "2025-03-18T11:00:00+01:00"
    await _send(receiver, "adt_a13_cancel_discharge.hl7")
    reopened = await visit()
    assert reopened["status"] == "in-progress" and "end" not in reopened["period"]
    assert (await _one(ctx, "Encounter", movement_system, "MVT-5003"))["status"] == "entered-in-error"
    assert len(await _find(ctx, "Patient")) == 1 and len(await _find(ctx, "Encounter")) == 4


async def test_a_full_pam_fr_admission_with_segments_not_mapped(receiver: Receiver, ctx: Context) -> None:
    # PD1, ROL, NK1, PV2, ZFP/ZFV/ZFM and ADT OBX are kept in the raw message, not mapped.
    await _send(receiver, "adt_a01_pam_fr_full.hl7")
    patient = await _one(ctx, "Patient", "urn:oid:1.2.250.1.998.1.1", "8000123")
    assert patient["identifier"][1]["type"]["coding"][0]["code"] == "INS-NIR-TEST"
    assert patient["name"][0] == {"family": "MOREAU", "given": ["Émile", "Émile Jules"], "use": "official"}
    assert patient["telecom"] == [{"value": "0240000000", "use": "home", "system": "phone"},
                                  {"value": "emile.moreau@example.fr", "system": "email"}]
    assert patient["address"] == [{"line": ["14 boulevard Gambetta"], "city": "Nantes",
                                   "postalCode": "44000", "country": "FRA", "use": "home"}]
    assert patient["extension"][0] == {  # the birthplace's INSEE code (COG), an INS trait
        "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
        "valueAddress": {"district": "75056"}}
    visit = await _one(ctx, "Encounter", "urn:oid:1.2.250.1.998.1.3", "9900123")
    assert visit["period"]["start"] == "2025-04-02T08:30:00+02:00"
    assert await ctx.store.count("Observation") == 0
    [kept] = await receiver.inbox.unsettled(("applied",))
    assert b"\rZFM|8|1|1\r" in kept.raw and b"\rROL|" in kept.raw


async def test_a_record_merged_away_is_not_written_to_again(receiver: Receiver, ctx: Context) -> None:
    await _send(receiver, "adt_a28_add_person.hl7")
    await _send(receiver, "adt_a28_add_person_2.hl7")
    await _send(receiver, "adt_a40_merge.hl7")
    before = await _versions(ctx)
    survivor = await _one(ctx, "Patient", IPP, "200001")
    stale = message("adt_a28_add_person_2.hl7").replace(b"|A28-0002|", b"|A31-0002|").replace(
        b"ADT^A28", b"ADT^A31")
    ack = await receiver.receive(stale)
    assert msa(ack)[1] == "AE"
    [err] = errs(ack)
    assert err[2] == "PID^1^3^1" and err[3].startswith("204^") and f"Patient/{survivor['id']}" in err[8]
    assert await _versions(ctx) == before


def _registration(n: int) -> bytes:
    """An A28 of a patient of its own (IPP 3000nn), control id R-nn."""
    return (message("adt_a28_add_person.hl7").replace(b"|A28-0001|", f"|R-{n}|".encode())
            .replace(b"200001^^^", f"{300000 + n}^^^".encode()))


async def test_messages_sent_ahead_are_committed_in_one_transaction(
        receiver: Receiver, ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    transactions = []
    original = bundle.transaction

    async def counted(*args: Any) -> Any:
        transactions.append(args)
        return await original(*args)

    monkeypatch.setattr("fhir_server.interop.hl7v2.receiver.bundle.transaction", counted)
    sent = [_registration(n) for n in range(4)]
    acks = await receiver.receive_all([(raw, read(raw)) for raw in sent], "192.0.2.7")
    assert [msa(ack)[1:3] for ack in acks] == [["AA", f"R-{n}"] for n in range(4)]
    assert len(transactions) == 1
    for n in range(4):  # each resource names its own message
        patient = await _one(ctx, "Patient", IPP, str(300000 + n))
        assert patient["meta"]["source"].endswith(f":R-{n}")
    assert len(await receiver.inbox.unsettled(("applied",))) == 4


async def test_a_message_sent_ahead_that_fails_fails_alone(receiver: Receiver, ctx: Context) -> None:
    await _send(receiver, "adt_a28_add_person.hl7")
    await _send(receiver, "adt_a28_add_person_2.hl7")
    await _send(receiver, "adt_a40_merge.hl7")
    stale = message("adt_a28_add_person_2.hl7").replace(b"|A28-0002|", b"|A31-0002|").replace(
        b"ADT^A28", b"ADT^A31")  # names the record merged away: refused in the transaction's checks
    sent = [_registration(1), stale, _registration(2), message("bad_date.hl7"), _registration(3)]
    acks = await receiver.receive_all([(raw, read(raw)) for raw in sent], None)
    assert [msa(ack)[1] for ack in acks] == ["AA", "AE", "AA", "AE", "AA"]
    assert errs(acks[1])[0][3].startswith("204^")
    for n in (1, 2, 3):
        await _one(ctx, "Patient", IPP, str(300000 + n))
    assert {m.control_id for m in await receiver.inbox.unsettled((ERROR,))} == {"A31-0002", "BAD-0002"}


async def test_messages_sent_ahead_for_one_patient_are_applied_in_turn(receiver: Receiver, ctx: Context) -> None:
    sent = [message(n) for n in ("adt_a01_admit.hl7", "adt_a08_update.hl7", "adt_z99_movement_update.hl7")]
    acks = await receiver.receive_all([(raw, read(raw)) for raw in sent], None)
    assert [msa(ack)[1] for ack in acks] == ["AA", "AA", "AA"]
    history = (await ctx.store.history(HistoryQuery("Patient", count=100))).versions
    assert sorted((v.version, orjson.loads(v.body)["meta"]["source"].rsplit(":", 1)[1]) for v in history
                  if v.body) == [(1, "A01-0001"), (2, "A08-0001"), (3, "Z99-0001")]


async def test_a_transaction_waits_for_its_receipt_on_disk(
        receiver: Receiver, ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    on_disk = threading.Event()
    sync = receiver.inbox._sync

    def slow_sync() -> None:
        on_disk.wait(10)
        sync()

    monkeypatch.setattr(receiver.inbox, "_sync", slow_sync)
    answer = asyncio.ensure_future(receiver.receive(message("adt_a01_admit.hl7")))
    while not await receiver.inbox.unsettled((RECEIVED,)):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # mapped, validated: the commit waits for the receipt's sync
    assert await ctx.store.count("Patient") == 0 and not answer.done()
    on_disk.set()
    assert msa(await answer)[1] == "AA"
    assert await ctx.store.count("Patient") == 1


async def test_a_look_up_by_identifier_past_a_page_is_refused_not_half_read(ctx: Context) -> None:
    for value in ("1", "2"):
        patient = {"resourceType": "Patient", "identifier": [{"system": IPP, "value": value}]}
        await crud.create(ctx, "Patient", Payload(dict(patient), dict(patient)))
    both = [{"system": IPP, "value": "1"}, {"system": IPP, "value": "2"}]
    assert len(await stored_with(ctx, "Patient", *both)) == 2  # one search, the tokens OR-ed
    with pytest.raises(Refused):
        await stored_with(dataclasses.replace(ctx, max_page_size=1), "Patient", *both)


async def test_a_committed_message_is_never_applied_again_even_after_a_newer_update(
        receiver: Receiver, ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its outcome could not be recorded (the inbox locked), a newer message updated the
    Patient since: the resend finds its own commit in the Patient's history and answers AA
    without writing the older data back."""
    settle_all = receiver.inbox.settle_all

    async def locked(*_: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(receiver.inbox, "settle_all", locked)
    await _send(receiver, "adt_a28_add_person.hl7")
    monkeypatch.setattr(receiver.inbox, "settle_all", settle_all)
    [unsettled] = await receiver.inbox.unsettled((RECEIVED,))
    await _send(receiver, "adt_a31_update_person.hl7")  # the newer data
    newer = await _one(ctx, "Patient", IPP, "200001")
    before = await _versions(ctx)

    ack = await receiver.receive(message("adt_a28_add_person.hl7"))
    assert msa(ack)[1:3] == ["AA", "A28-0001"]
    assert await _versions(ctx) == before
    assert await _one(ctx, "Patient", IPP, "200001") == newer
    assert (await receiver.inbox.get(unsettled.id)).state == "applied"  # type: ignore[union-attr]
