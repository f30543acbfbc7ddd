"""Decimals are stored as the client wrote them (FHIR R4 datatypes.html#decimal, json.html)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest

from fhir_server.model import jsonbody
from fhir_server.model.errors import FhirError, Kind
from fhir_server.model.jsonbody import dump, parse
from fhir_server.model.validation import Validator


class Decimal:
    """A generated JSON number written with a fraction or exponent, as text."""

    def __init__(self, text: str) -> None:
        self.text = text


def compact(value: Any) -> str:
    """Serialise without spaces, writing each Decimal's text verbatim."""
    if isinstance(value, Decimal):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{compact(v)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(compact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


decimals = st.builds(
    lambda sign, whole, fraction, exponent: Decimal(f"{sign}{whole}{fraction}{exponent}"),
    st.sampled_from(["", "-"]),
    st.integers(0, 10**6).map(str),
    st.sampled_from(["", ".0", ".50", ".125", ".000"]),
    st.sampled_from(["", "e2", "E-7", "e+3"]),
).filter(lambda d: "." in d.text or "e" in d.text.lower())
# Strings that hold digits and dots, but no character JSON writers may escape differently.
texts = st.text(alphabet="abcXYZ é.-0123456789", max_size=8)
leaves = st.one_of(decimals, st.integers(-10**9, 10**9), texts, st.booleans(), st.none())
documents = st.recursive(
    leaves,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(texts, children, max_size=4)),
    max_leaves=25,
)


@pytest.fixture(params=["small", "large"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both parsing paths: orjson plus an exact re-parse, and the recording stdlib parse."""
    if request.param == "large":
        monkeypatch.setattr(jsonbody, "_LARGE", 0)
    return str(request.param)


# The fixture only switches a module constant, which is the same for every example.
@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=documents)
def test_decimals_keep_their_text(path: str, document: Any) -> None:
    body = compact(document).encode()
    checked, exact = parse(body)
    before = json.dumps(checked)
    assert dump(exact) == body
    assert json.dumps(checked) == before  # the checked view is never changed


def test_large_bodies_share_containers_without_decimals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonbody, "_LARGE", 0)
    body = b'{"a":{"b":[1,2]},"c":{"d":1.50},"e":"3.25 mg"}'
    checked, exact = parse(body)
    assert exact["a"] is checked["a"]
    assert exact["c"] is not checked["c"]
    assert parse(b'{"a":"1.5"}') == ({"a": "1.5"}, {"a": "1.5"})


@pytest.mark.parametrize("body", [
    b'{"a":1.5,"a":2.50}',
    b'{"a":{"b":1,"c":{"b":2}},"d":[{"e":"x:y","e":"z"}]}',
    b'{"a":"\\u003a","a":1}',  # an escaped colon: the exact parse decides
])
def test_repeated_names_are_refused(path: str, body: bytes) -> None:
    with pytest.raises(FhirError) as raised:
        parse(body)
    assert raised.value.kind is Kind.INVALID
    assert "repeats" in raised.value.issues[0].diagnostics


def test_same_name_in_different_objects_is_fine(path: str) -> None:
    body = b'{"a":{"b":1,"c":{"b":2.50}},"d":[{"e":"x:y \\u003a"},{"e":"z"}]}'
    assert dump(parse(body)[1]) == body.replace(b"\\u003a", b":")


@pytest.mark.parametrize(("body", "words"), [
    (b"[" * 301 + b"]" * 301, "300 levels"),
    (b'{"a":' + b"9" * 65 + b"}", "65 characters"),
    (b'{"a":' + b"1." + b"5" * 70 + b"}", "72 characters"),
    (b'{"a":18446744073709551616}', "64 bits"),
    (b'{"a":1e999}', "out of range"),
])
def test_limits(path: str, body: bytes, words: str) -> None:
    with pytest.raises(FhirError) as raised:
        parse(body)
    if path == "large" or words in ("300 levels", "72 characters"):  # orjson words the others
        assert words in raised.value.issues[0].diagnostics


def test_unpaired_surrogates_are_refused(path: str) -> None:
    with pytest.raises(FhirError):
        parse(b'{"a":"\\ud800"}')
    assert parse(b'{"a":"\\ud83d\\ude00"}')[0] == {"a": "\U0001f600"}


def test_patch_documents_have_the_same_limits() -> None:
    for body in (b"[" * 301 + b"]" * 301, b'[{"op":"add","op":"remove"}]', b'["\\udfff"]'):
        with pytest.raises(FhirError):
            jsonbody.parse_decimal(body)



def _nested(levels: int, leaf: bytes) -> bytes:
    """A Patient of exactly `levels` levels of objects and arrays, its deepest branch last."""
    inner = leaf
    for level in range(levels - 1):
        inner = b"[" + inner + b"]" if level % 2 else b'{"b":' + inner + b"}"
    return b'{"resourceType":"Patient","gender":"male","a":[1,{"c":2}],"z":' + inner + b"}"


@pytest.mark.parametrize("leaf", [b"1", b"1.50", b'"x"'])
@pytest.mark.parametrize("levels", [3, 99, 100, 101, 102, 300])
def test_the_depth_parse_counts_is_the_one_the_validator_counts(path: str, levels: int, leaf: bytes) -> None:
    """`Validator.issues` takes the depth `parse_counted` counted instead of walking the tree
    again: the same depth, and the same issues, as its own walk finds, on both parsers."""
    body = _nested(levels, leaf)
    checked, exact, depth = jsonbody.parse_counted(body)
    assert depth == levels == jsonbody.nesting(checked, jsonbody.MAX_BODY_DEPTH)
    assert checked == parse(body)[0] and (exact is checked) == (leaf != b"1.50")
    validator = Validator()
    assert validator.issues(checked, depth) == validator.issues(checked)
    assert validator.outcome(checked, (), depth) == validator.outcome(checked)


_FAULTS = {
    "a repeated name": b'{"a":1,"a":2}',
    "a 70-digit number": b'{"n":' + b"1" * 70 + b"}",
    "an integer past 64 bits": b'{"n":' + b"9" * 30 + b"}",
    "a decimal out of range": b'{"n":1e999}',
    "an unpaired surrogate": b'{"s":"\\ud800"}',
    "too deep": b'{"d":' + b"[" * 400 + b"]" * 400 + b"}",
    "not JSON": b'{"x":}',
    "an escaped colon and a repeat": b'{"t":"\\u003a","t":1}',
}


@pytest.mark.parametrize("second", list(_FAULTS))
@pytest.mark.parametrize("first", list(_FAULTS))
def test_a_large_body_is_refused_for_what_the_parse_with_every_check_meets_first(
        first: str, second: str) -> None:
    """A body over 1 MB is parsed without the hook that sees each object's names, which are
    counted after: what it is refused for, with two faults, is still what the stdlib parse
    with every check, then the depth and surrogate checks, meet first."""
    padding = b'"pad":"' + b"x" * (1 << 20) + b'"'
    body = b'{"first":' + _FAULTS[first] + b',' + padding + b',"second":' + _FAULTS[second] + b"}"
    with pytest.raises(FhirError) as strict:
        jsonbody._strict(body, jsonbody._decimal)
    with pytest.raises(FhirError) as raised:
        parse(body)
    assert raised.value.issues == strict.value.issues
