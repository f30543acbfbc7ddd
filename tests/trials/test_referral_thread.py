"""The referral thread (trials/thread.py, docs/referrals.md "The referral thread"):
investigators ask, the referring physician replies, and an updated copy of the record
replaces the previous frozen one (both kept, the older tagged superseded), the recipients
told in the thread."""

from __future__ import annotations

from typing import Any

from fhir_server.model.platform_codes import MESSAGE_SYSTEM, OUTCOME_SYSTEM
from tests.http.helpers import send
from tests.trials.conftest import DR, ROLE, TEAM, Platform


def _referral(platform: Platform) -> dict[str, Any]:
    response = platform.refer("shared")
    assert response.status_code == 201, response.text
    return response.json()


def _post(platform: Platform, actor: str, responds_to: str, *texts: str, **extra: Any) -> Any:
    body = {"resourceType": "Communication", "status": "completed",
            "inResponseTo": [{"reference": responds_to}], **extra}
    if texts:
        body["payload"] = [{"contentString": t} for t in texts]
    return send(platform.client, "POST", "/fhir/Communication", body, **platform.headers(actor))


def _kind(message: dict[str, Any]) -> str:
    return next(c["code"] for c in message["category"][0]["coding"] if c["system"] == MESSAGE_SYSTEM)


def test_investigators_ask_and_the_physician_replies(platform: Platform) -> None:
    referral = _referral(platform)
    asked = _post(platform, "investigator", f"Communication/{referral['id']}", "Latest ECOG?")
    assert asked.status_code == 201, asked.text
    question = asked.json()
    assert _kind(question) == "question"
    assert question["sender"] == {"reference": ROLE} and question["recipient"] == [{"reference": DR}]
    assert question["subject"] == referral["subject"] and question["about"] == referral["about"]
    replied = _post(platform, "physician", f"Communication/{question['id']}", "ECOG 1 on 2026-11-20.")
    assert replied.status_code == 201, replied.text
    reply = replied.json()
    assert _kind(reply) == "reply"
    assert reply["sender"] == {"reference": DR} and reply["recipient"] == [{"reference": ROLE}]
    assert reply["inResponseTo"] == [{"reference": f"Communication/{question['id']}"}]
    # The investigator reads the reply; the other recipient (the site) sees neither: a question
    # and its reply are between the asker and the physician.
    assert platform.client.get(f"/fhir/Communication/{reply['id']}",
                               headers=platform.headers("investigator")).status_code == 200
    for actor, seen in (("investigator", True), ("site", False)):
        thread = platform.client.get(f"/fhir/Communication?in-response-to=Communication/{referral['id']}",
                                     headers=platform.headers(actor)).json()
        assert (question["id"] in {e["resource"]["id"] for e in thread.get("entry", [])}) is seen
    # The referral is unchanged by questions; an answer with an outcome still moves it on.
    read = platform.client.get(f"/fhir/Communication/{referral['id']}", headers=platform.headers("physician")).json()
    assert read["meta"]["versionId"] == "1"


def test_a_reply_to_the_referral_goes_to_every_recipient(platform: Platform) -> None:
    referral = _referral(platform)
    reply = _post(platform, "physician", f"Communication/{referral['id']}", "New scan attached soon.")
    assert reply.status_code == 201, reply.text
    assert {r["reference"] for r in reply.json()["recipient"]} == {ROLE, TEAM}


def test_thread_messages_are_text_and_written_by_the_server_only(platform: Platform) -> None:
    referral = _referral(platform)
    before = platform.client.get(f"/fhir/Communication?in-response-to=Communication/{referral['id']}",
                                 headers=platform.headers("physician")).json().get("total")
    assert _post(platform, "investigator", f"Communication/{referral['id']}").status_code == 400  # no text
    assert _post(platform, "physician", f"Communication/{referral['id']}", " ").status_code == 400
    forged = {"resourceType": "Communication", "status": "completed",
              "category": [{"coding": [{"system": MESSAGE_SYSTEM, "code": "question"}]}],
              "subject": {"reference": "Patient/shared"}, "payload": [{"contentString": "x"}]}
    assert send(platform.client, "POST", "/fhir/Communication", forged,
                **platform.headers("physician")).status_code == 403
    # A reply in someone else's name is no reply: refused as any message so sent.
    assert _post(platform, "physician", f"Communication/{referral['id']}", "x",
                 sender={"reference": ROLE}).status_code == 403
    after = platform.client.get(f"/fhir/Communication?in-response-to=Communication/{referral['id']}",
                                headers=platform.headers("physician")).json().get("total")
    assert before == after


def test_a_closed_referral_takes_no_more_questions(platform: Platform) -> None:
    referral = _referral(platform)
    closed = _post(platform, "investigator", f"Communication/{referral['id']}", "Brain metastases.",
                   reasonCode=[{"coding": [{"system": OUTCOME_SYSTEM, "code": "not-preselected"}]}])
    assert closed.status_code == 201, closed.text
    assert _post(platform, "investigator", f"Communication/{referral['id']}", "One more?").status_code == 409
    assert _post(platform, "physician", f"Communication/{referral['id']}", "Why?").status_code == 409


def test_an_updated_copy_replaces_the_frozen_record_and_keeps_it(platform: Platform) -> None:
    referral = _referral(platform)
    [first] = [p["contentReference"]["reference"] for p in referral["payload"] if "contentReference" in p]
    response = send(platform.client, "POST", f"/fhir/Communication/{referral['id']}/$update-record",
                    **platform.headers("physician"))
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["meta"]["versionId"] == "2"
    copies = [p["contentReference"]["reference"] for p in updated["payload"] if "contentReference" in p]
    assert len(copies) == 2 and copies[1] == first and copies[0] != first
    # Both are kept and readable by the recipients; the older one is tagged superseded.
    old = platform.client.get(f"/fhir/{first}", headers=platform.headers("investigator"))
    new = platform.client.get(f"/fhir/{copies[0]}", headers=platform.headers("investigator"))
    assert old.status_code == new.status_code == 200
    assert {"system": MESSAGE_SYSTEM, "code": "superseded"} in [
        {k: t[k] for k in ("system", "code")} for t in old.json()["meta"]["tag"]]
    assert old.json()["meta"]["versionId"] == "2"
    assert not any(t.get("code") == "superseded" for t in new.json()["meta"]["tag"])
    # The recipients are told in the thread (a write Subscriptions on Communication see).
    thread = platform.client.get(f"/fhir/Communication?in-response-to=Communication/{referral['id']}",
                                 headers=platform.headers("investigator")).json()
    [notice] = [e["resource"] for e in thread["entry"] if _kind(e["resource"]) == "record-update"]
    assert {r["reference"] for r in notice["recipient"]} == {ROLE, TEAM}
    assert notice["payload"][0]["contentReference"]["reference"] == copies[0]


def test_only_the_referring_physician_sends_an_update(platform: Platform) -> None:
    referral = _referral(platform)
    for actor in ("investigator", "site", "ehr", "admin"):
        response = send(platform.client, "POST", f"/fhir/Communication/{referral['id']}/$update-record",
                        **platform.headers(actor))
        assert response.status_code == 404, actor
        made_up = send(platform.client, "POST", "/fhir/Communication/no-such-referral/$update-record",
                       **platform.headers(actor))
        assert made_up.json() == {**response.json(), "issue": [
            {**i, "diagnostics": i["diagnostics"].replace(referral["id"], "no-such-referral")}
            for i in response.json()["issue"]]}
    read = platform.client.get(f"/fhir/Communication/{referral['id']}", headers=platform.headers("physician")).json()
    assert read["meta"]["versionId"] == "1"
