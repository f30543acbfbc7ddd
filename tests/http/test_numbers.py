"""Numbers in URLs and headers: ASCII digits only, within what the stores hold (model/numbers.py).

Each used to overflow SQLite's INTEGER, Python's limit on the digits `int` converts, or the
calendar, and answer 500; each is now a 4xx OperationOutcome that leaves the store as it was.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fhir_server.model.numbers import MAX_WHOLE, whole_number
from fhir_server.settings import Settings
from tests.builders import patient
from tests.http.helpers import FHIR_JSON, issue, send
from tests.http.test_errors import _store_digest

HUGE = "9" * 5000


def test_whole_number_takes_ascii_digits_within_the_bound() -> None:
    assert whole_number("12") == 12
    assert whole_number(str(MAX_WHOLE)) == MAX_WHOLE
    assert whole_number(str(MAX_WHOLE + 1)) is None
    assert whole_number("１") is None  # fullwidth digit one
    assert whole_number("٣") is None  # Arabic-Indic three
    assert whole_number("") is None and whole_number("-1") is None and whole_number(HUGE) is None


@pytest.mark.parametrize(("method", "url", "headers", "status"), [
    ("GET", "/fhir/Patient/p1/_history/99999999999999999999", {}, 404),
    ("GET", "/fhir/Patient/p1/_history/%EF%BC%91", {}, 404),
    ("GET", f"/fhir/Patient/_history?_count={HUGE}", {}, 400),
    ("GET", f"/fhir/Patient/p1/_history?_count={HUGE}", {}, 400),
    ("GET", f"/fhir/_history?_cursor={HUGE}", {}, 400),
    ("GET", "/fhir/Patient/_history?_since=9999-12-31T23:59:59-14:00", {}, 400),
    ("GET", "/fhir/Patient/_history?_since=0001-01-01T00:00:00%2B14:00", {}, 400),
    ("GET", f"/fhir/Patient?_count={HUGE}", {"Prefer": "handling=strict"}, 400),
    ("POST", "/fhir/Patient", {"If-None-Exist": f"_count={HUGE}"}, 400),
    ("DELETE", f"/fhir/Patient?name=x&_count={HUGE}", {}, 400),
    ("PUT", "/fhir/Patient/p1", {"If-Match": f'W/"{HUGE[:4301]}"'}, 400),
])
def test_out_of_range_number_is_a_client_error(
    client: TestClient, settings: Settings, method: str, url: str, headers: dict[str, str], status: int,
) -> None:
    send(client, "PUT", "/fhir/Patient/p1", patient(id="p1"))
    before = _store_digest(settings)
    body = patient(id="p1") if method in ("PUT", "POST") else None
    response = send(client, method, url, body, **headers)
    assert response.status_code == status, response.text
    assert issue(response)["severity"] == "error"
    assert _store_digest(settings) == before


def test_search_with_a_huge_count_in_a_post_search_is_a_warning(client: TestClient) -> None:
    response = client.post("/fhir/Patient/_search", content=f"_count={HUGE}",
                           headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": FHIR_JSON})
    assert response.status_code == 200, response.text
    outcome = [e for e in response.json()["entry"] if e["search"]["mode"] == "outcome"]
    assert "_count" in outcome[0]["resource"]["issue"][0]["diagnostics"]
