"""`_sort` on protected parameters after decryption (store/decrypted_sort.py; FHIR R4
search.html#sort, #count): the order, position cursors that carry no value, the limit."""

from __future__ import annotations

import base64

import orjson
import pytest

from fhir_server.model.errors import FhirError
from fhir_server.store import decrypted_sort
from fhir_server.store.base import Version
from fhir_server.store.cursors import encode
from tests.store import search_model as m


def version(rid: str, family: str | None, birth: str | None = None) -> Version:
    body: dict[str, object] = {"resourceType": "Patient", "id": rid,
                               "meta": {"lastUpdated": "2024-01-01T00:00:00Z"}}
    if family:
        body["name"] = [{"family": family}]
    if birth:
        body["birthDate"] = birth
    return Version("Patient", rid, 1, "2024-01-01T00:00:00Z", "POST", orjson.dumps(body))


FOUND = [version("1", "Émile", "1970"), version("2", "ada"), version("3", None, "1960"),
         version("4", "Zoë", "1960"), version("5", "Ada", "1970")]


def ids(versions: object) -> list[str]:
    return [v.id for v in versions]  # type: ignore[attr-defined]


def test_order_is_the_plaintext_sort_order() -> None:
    """Normalized values, lowest ascending / highest descending, missing last, then creation."""
    assert ids(decrypted_sort.order(m.query("Patient", ("_sort", "family")), FOUND)) == ["2", "5", "1", "4", "3"]
    assert ids(decrypted_sort.order(m.query("Patient", ("_sort", "-family")), FOUND)) == ["4", "1", "2", "5", "3"]
    assert ids(decrypted_sort.order(m.query("Patient", ("_sort", "birthdate,-family")), FOUND)) == [
        "4", "3", "1", "5", "2"]


def test_pages_are_cut_by_position_and_the_cursor_holds_no_value() -> None:
    ordered = decrypted_sort.order(m.query("Patient", ("_sort", "family")), FOUND)
    first, after, before = decrypted_sort.page(ordered, 2, None)
    assert ids(first) == ["2", "5"] and before is None and after is not None
    second, after2, before2 = decrypted_sort.page(ordered, 2, after)
    assert ids(second) == ["1", "4"] and after2 is not None and before2 is not None
    assert ids(decrypted_sort.page(ordered, 2, before2)[0]) == ["2", "5"]
    assert ids(decrypted_sort.page(ordered, 2, after2)[0]) == ["3"]
    assert decrypted_sort.page(ordered, 2, after2)[1] is None
    raw = base64.urlsafe_b64decode(after + "=" * (-len(after) % 4))
    assert orjson.loads(raw) == [False, 2, "sorted-after-decryption"]
    assert b"mile" not in raw and b"ada" not in raw.lower()


@pytest.mark.parametrize("cursor", [encode(False, ["ada", 17]), encode(False, [-2, "sorted-after-decryption"]),
                                    encode(False, [1]), "not-a-cursor"])
def test_a_cursor_of_another_kind_is_refused(cursor: str) -> None:
    with pytest.raises(FhirError) as refused:
        decrypted_sort.page(FOUND, 2, cursor)
    assert refused.value.issues[0].expression == ("_cursor",)


def test_count_total_and_the_limit() -> None:
    q = m.query("Patient", ("_sort", "family"), ("_total", "accurate"), ("_count", "2"))
    page = decrypted_sort.sorted_page(q, FOUND, None, limit=5)
    assert ids(page.matches) == ["2", "5"] and page.total == 5
    with pytest.raises(FhirError) as refused:
        decrypted_sort.sorted_page(q, FOUND, None, limit=4)
    [issue] = refused.value.issues
    assert issue.code == "too-costly" and issue.expression == ("_sort",) and "4" in issue.diagnostics


def test_the_collecting_search_asks_one_more_than_the_limit_and_nothing_else() -> None:
    q = m.query("Patient", ("_sort", "family"), ("_count", "2"), ("_include", "Patient:organization"),
                ("_total", "accurate"))
    collect = decrypted_sort.unsorted(q, 50)
    assert collect.sort == () and collect.count == 51 and collect.include == () and collect.total is None
    assert collect.clauses == q.clauses
