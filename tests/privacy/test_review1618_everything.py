"""Review of `Patient/[id]/$everything` (issue 18): parameters a hostile caller sends
(digits of other scripts, ranges upside down once time zones are counted, values that are not
FHIR dates) answer 400 naming the parameter, synchronously and before an asynchronous job is
stored; a paging link replayed by someone else reaches nothing."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.bulk.conftest import jobs
from tests.bulk.helpers import kick_off
from tests.privacy.conftest import Server

BAD = [
    ("_count=" + quote("²"), "_count"),  # str.isdigit() says yes, int() says no
    ("_count=" + quote("١٠"), "_count"),  # Arabic-Indic ten: not a FHIR integer
    # 06:00Z is after 10:00+05:00 (05:00Z): upside down once the offsets are counted
    ("start=2020-01-01T06:00:00Z&end=" + quote("2020-01-01T10:00:00+05:00"), "start"),
    ("start=2020-01-02&end=" + quote("2020-01-01T23:00:00+00:00"), "start"),
    ("start=20200101", "start"),  # ISO 8601's basic form: not a FHIR date
    ("end=" + quote("2020-01-01 10:00:00Z"), "end"),
    ("start=2020-01-01T10:00", "start"),  # a time without its time zone
    ("_since=2020-01-01T10", "_since"),
]


@pytest.mark.parametrize("query, expression", BAD)
def test_bad_parameters_are_400_naming_them(sqlite_server: Server, query: str, expression: str) -> None:
    client = sqlite_server.client
    response = client.get(f"/fhir/Patient/a/$everything?{query}", headers=sqlite_server.headers("patient-a"))
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["expression"] == [expression]
    asynchronous = kick_off(client, f"/fhir/Patient/a/$everything?{query}", sqlite_server.headers("ehr"))
    assert asynchronous.status_code == 400, asynchronous.text
    assert asynchronous.json()["issue"][0]["expression"] == [expression]
    assert jobs(client) == []


def test_a_range_right_side_up_once_offsets_are_counted_is_served(sqlite_server: Server) -> None:
    # 10:00+05:00 is 05:00Z, before 06:00Z
    query = "start=" + quote("2020-01-01T10:00:00+05:00") + "&end=2020-01-01T06:00:00Z"
    response = sqlite_server.client.get(f"/fhir/Patient/a/$everything?{query}",
                                        headers=sqlite_server.headers("patient-a"))
    assert response.status_code == 200, response.text


def test_a_paging_link_replayed_by_another_patient_reaches_nothing(sqlite_server: Server) -> None:
    client = sqlite_server.client
    first = client.get("/fhir/Patient/a/$everything?_count=2", headers=sqlite_server.headers("patient-a"))
    assert first.status_code == 200, first.text
    following = next(link["url"] for link in first.json()["link"] if link["relation"] == "next")
    path = following.removeprefix("http://testserver")
    replayed = client.get(path, headers=sqlite_server.headers("patient-b"))
    assert replayed.status_code == 404
    assert "entry" not in replayed.json()
    # and under a huge _count, one page at most the server's maximum
    huge = client.get("/fhir/Patient/a/$everything?_count=99999999999999999999",
                      headers=sqlite_server.headers("patient-a"))
    assert huge.status_code == 200
    assert len(huge.json()["entry"]) <= client.app.state.context.max_page_size  # type: ignore[attr-defined]
