"""Blind-index search equals plaintext search, on every store (FHIR R4 search.html#string,
#token, #modifiers: missing, exact, not, of-type; #combining, #chaining, #has, #sort).

The shared Synthea patients and practitioners, plus patients and related persons with accented
names, are stored once in a store with blind indexes. Hypothesis then draws searches on the
protected parameters (values are prefixes of stored values in another case or without accents,
or made up), runs them page by page, and holds each answer to the reference evaluator
(search/match.py) over the plaintext entries: the brute-force answer. `_sort` on a protected
parameter must give the order a plaintext store gives.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.crypto import BlindDigest
from fhir_server.model.errors import FhirError
from fhir_server.search import (
    BlindIndex,
    StringEntry,
    TokenEntry,
    default_protected,
    default_registry,
)
from fhir_server.store.base import ConditionalCreate, Delete, Store, Write
from fhir_server.store.mongo import MongoStore
from fhir_server.store.sqlite import SqliteStore
from tests.store import search_model as m
from tests.store.conftest import DOUBLE, DOUBLE_LACKS, MONGODB_URI, STORES, encrypting, migrated_double

SYNTHEA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "synthea"
CAP = 12  # small, so that generated values cross it
BLIND = BlindIndex(default_protected(default_registry()),
                   BlindDigest(lambda param: hashlib.sha256(param.encode()).digest()),
                   default_registry(), prefix_cap=CAP, sort_limit=500)
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def blind_store(kind: str, folder: Path) -> Store:
    """A store of `kind` (tests/store/conftest.STORES), encrypting its bodies as by default,
    with the blind indexes above."""
    if kind == "sqlite":
        return SqliteStore(folder / "blind.db", codec=encrypting(folder), blind=BLIND)
    if kind == DOUBLE:
        return migrated_double(codec=encrypting(folder), blind=BLIND)
    assert MONGODB_URI is not None
    plain = STORES[kind](folder)
    assert isinstance(plain, MongoStore)
    return MongoStore(plain.client, plain.db.name, codec=plain.codec, blind=BLIND)


def synthea() -> list[dict[str, Any]]:
    """Every Patient and Practitioner of the shared Synthea bundles."""
    found = []
    for path in sorted(SYNTHEA.glob("*.json")):
        for entry in json.loads(path.read_text())["entry"]:
            if entry["resource"]["resourceType"] in ("Patient", "Practitioner"):
                found.append(entry["resource"])
    return found


ACCENTED = ("Hélène", "HELENE", "Lefèvre", "Müller", "Mueller", "Ærø", "Straße", "van der Berg",
            "O'Brien", "Łukasz", "Smith, Jr", "Zoë Nguyễn", "Jean-François d'Arc de Montmorency")


def accented() -> list[dict[str, Any]]:
    """Patients and related persons with accents, commas, long and shared names."""
    made: list[dict[str, Any]] = []
    for n, name in enumerate(ACCENTED):
        other = ACCENTED[(n * 5 + 3) % len(ACCENTED)]
        made.append({
            "resourceType": "Patient", "id": f"acc{n}", "birthDate": f"19{50 + n}-01-02",
            "name": [{"family": name, "given": [other, "Zoé"]}],
            "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": f"2{n:02d}0575123456",
                            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}]}},
                           {"value": f"MRN-{n % 4}"}],
            "telecom": [{"system": "email", "value": f"{name.lower().replace(' ', '.')}@exemple.fr"}],
            "address": [{"city": ("Évry", "Paris", "Saint-Étienne")[n % 3], "postalCode": f"9{n % 3}000",
                         "line": [f"{n} rue de l'Église"]}],
        })
        if n % 2 == 0:
            made.append({"resourceType": "RelatedPerson", "id": f"rel{n}", "patient": {"reference": f"Patient/acc{n}"},
                         "name": [{"text": f"{other} {name}"}], "telecom": [{"system": "phone", "value": f"+33 6 {n:02d}"}]})
        made.append({"resourceType": "Observation", "id": f"obs{n}", "status": "final",
                     "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                     "subject": {"reference": f"Patient/acc{n}"}})
    return made


RESOURCES = synthea() + accented()


@pytest.fixture(scope="module", params=sorted(STORES))
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[m.Harness]:
    kind = str(request.param)
    opened = m.Harness(blind_store(kind, tmp_path_factory.mktemp("blind")), DOUBLE_LACKS if kind == DOUBLE else ())
    try:
        opened.replace_all(RESOURCES)
        yield opened
    finally:
        opened.close()


# --- values the searches are made of -------------------------------------------------------

STRING_PARAMS = [(t, c) for t, c in (p.split(".") for p in default_protected(default_registry()))
                 if default_registry().get(t, c).type == "string"]  # type: ignore[union-attr]
TOKEN_PARAMS = [(t, c) for t, c in (p.split(".") for p in default_protected(default_registry()))
                if default_registry().get(t, c).type == "token"]  # type: ignore[union-attr]


def _plain_values() -> tuple[dict[tuple[str, str], list[str]], dict[tuple[str, str], list[TokenEntry]]]:
    """The stored plaintext, per (type, parameter): string values as written, token entries."""
    from fhir_server.search import extract

    strings: dict[tuple[str, str], list[str]] = {}
    tokens: dict[tuple[str, str], list[TokenEntry]] = {}
    for resource in RESOURCES:
        for entry in extract(resource):
            key = (resource["resourceType"], entry.param)
            if type(entry) is StringEntry and key in STRING_PARAMS:
                strings.setdefault(key, []).append(entry.exact)
            elif type(entry) is TokenEntry and key in TOKEN_PARAMS and entry.code:
                tokens.setdefault(key, []).append(entry)
    return strings, tokens


STRINGS, TOKENS = _plain_values()


def escape(text: str) -> str:
    """A search value as a client escapes it (search.html#escaping)."""
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$").replace("|", "\\|")


def unaccented(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


@st.composite
def string_value(draw: st.DrawFn, rtype: str, code: str) -> tuple[str, str]:
    """(modifier, value): a prefix of a stored value in another case or without accents, the
    whole value for :exact (sometimes in another case), or made-up text."""
    stored = STRINGS.get((rtype, code)) or ["x"]
    value = draw(m.choice(stored))
    kind = draw(st.sampled_from(["prefix", "prefix", "prefix", "exact", "exact", "made-up"]))
    if kind == "exact":
        return ":exact", draw(st.sampled_from([value, value, value.upper(), unaccented(value)]))
    if kind == "made-up":
        return "", draw(st.text(alphabet="aeéiloøsß ", min_size=1, max_size=4).filter(str.strip))
    prefix = value[: draw(st.integers(1, min(len(value), CAP)))]
    return "", draw(st.sampled_from([prefix, prefix.lower(), prefix.upper(), unaccented(prefix)])).strip() or prefix


@st.composite
def token_value(draw: st.DrawFn, rtype: str, code: str) -> tuple[str, str]:
    """(modifier, value): stored codes as `code`, `system|code`, `|code`, `system|`, :not or
    :of-type, or a code nobody has."""
    entry = draw(m.choice(TOKENS.get((rtype, code)) or [TokenEntry(code, None, "none")]))
    value = escape(entry.code or "")
    forms = [("", value), ("", f"|{value}"), (":not", value), ("", "nobody-has-this")]
    if entry.system:
        forms += [("", f"{escape(entry.system)}|{value}"), ("", f"{escape(entry.system)}|")]
    if entry.type_system and entry.type_code:
        forms.append((":of-type", f"{escape(entry.type_system)}|{escape(entry.type_code)}|{value}"))
    return draw(st.sampled_from(forms))


@st.composite
def clause(draw: st.DrawFn, rtype: str) -> tuple[str, str]:
    """One protected search parameter of `rtype`, with one or two values (OR)."""
    params = [p for p in STRING_PARAMS + TOKEN_PARAMS if p[0] == rtype]
    _, code = draw(st.sampled_from(params))
    if draw(st.integers(0, 9)) == 0:
        return f"{code}:missing", draw(st.sampled_from(["true", "false"]))
    strategy = string_value if (rtype, code) in STRING_PARAMS else token_value
    modifier, value = draw(strategy(rtype, code))
    if draw(st.booleans()):
        second_modifier, second = draw(strategy(rtype, code))
        if second_modifier == modifier:
            value = f"{value},{second}" if strategy is token_value else f"{escape(value)},{escape(second)}"
            return f"{code}{modifier}", value
    return f"{code}{modifier}", value if strategy is token_value else escape(value)


@st.composite
def search(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    """A search on protected parameters: direct (one or two ANDed), chained or reverse-chained."""
    shape = draw(st.sampled_from(["direct", "direct", "and", "chain", "has"]))
    if shape == "chain":
        name, value = draw(clause("Patient"))
        name = name.removesuffix(":not")  # a chain cannot end in :not (parse.py)
        if ":" in name:  # modifiers stay at the end of a chain: subject:Patient.name:exact
            code, _, modifier = name.partition(":")
            return "Observation", [(f"subject:Patient.{code}:{modifier}", value)]
        return "Observation", [(f"subject.{name}", value)]
    if shape == "has":
        name, value = draw(clause("RelatedPerson"))
        name = name.removesuffix(":not")
        return "Patient", [(f"_has:RelatedPerson:patient:{name}", value)]
    rtype = draw(st.sampled_from(["Patient", "Patient", "Practitioner", "RelatedPerson"]))
    params = [draw(clause(rtype))]
    if shape == "and":
        params.append(draw(clause(rtype)))
    return rtype, params


@SETTINGS
@given(search())
def test_blind_search_equals_plaintext_search(harness: m.Harness, drawn: tuple[str, list[tuple[str, str]]]) -> None:
    rtype, params = drawn
    q = m.query(rtype, *params)
    expected = harness.world.expected(q)
    try:
        found = harness.keys(q)
    except FhirError as refused:
        # Only a start-with value past the prefix cap may be refused; the refusal names it.
        [issue] = refused.issues
        assert "longer than" in issue.diagnostics, issue.diagnostics
        return
    assert len(found) == len(set(found)), found
    assert set(found) == expected, (params, sorted(found), sorted(expected))


# --- random people, round-tripped ----------------------------------------------------------

LETTERS = "aAéÉèçÇßæÆøİıŁłñÑ ﬁ'-,"  # accents, ligatures, İ/ı (tricky case folds), separators
WORDS = st.text(alphabet=LETTERS, min_size=1, max_size=CAP + 3).filter(str.strip)


@st.composite
def person(draw: st.DrawFn, rtype: str, rid: str) -> dict[str, Any]:
    name: dict[str, Any] = {"family": draw(WORDS), "given": draw(st.lists(WORDS, max_size=2)),
                            "prefix": draw(st.lists(WORDS, max_size=1))}
    resource: dict[str, Any] = {"resourceType": rtype, "id": rid, "name": [name]}
    if draw(st.booleans()):
        resource["identifier"] = [{"system": draw(st.sampled_from(["urn:a", "urn:b"])), "value": draw(WORDS)}]
    if draw(st.booleans()):
        resource["address"] = [{"city": draw(WORDS), "line": [draw(WORDS)]}]
    return resource


@st.composite
def people_and_search(draw: st.DrawFn) -> tuple[list[dict[str, Any]], str, tuple[str, str]]:
    """A few people, and a search on a value one of them has (cut, recased) or on a new one."""
    people = [draw(person(t, f"{t[0].lower()}{n}")) for n, t in
              enumerate(draw(st.lists(st.sampled_from(["Patient", "Practitioner"]), min_size=1, max_size=5)))]
    chosen = draw(st.sampled_from(people))
    # `name`, `phonetic` and `address` are searched partly on the rows of family, given and
    # address-city (search/blind.py): drawn with the values of each part.
    parts = [*chosen["name"][0]["given"], *chosen["name"][0]["prefix"]]
    name, part = draw(st.sampled_from(
        [("family", chosen["name"][0]["family"]), *[("given", g) for g in chosen["name"][0]["given"]],
         *[(n, v) for v in (chosen["name"][0]["family"], *parts) for n in ("name", "phonetic")],
         *[("address-city", a["city"]) for a in chosen.get("address", ())],
         *[("address", v) for a in chosen.get("address", ()) for v in (a["city"], *a["line"])],
         *[("identifier", i["value"]) for i in chosen.get("identifier", ())]]))
    if name == "identifier":
        return people, chosen["resourceType"], (name, escape(part))
    modifier = draw(st.sampled_from(["", "", ":exact"]))
    value = part if modifier else part[: draw(st.integers(1, len(part)))]
    value = draw(st.sampled_from([value, value.upper(), value.lower(), draw(WORDS)]))
    return people, chosen["resourceType"], (name + modifier, escape(value))


@pytest.fixture(scope="module", params=sorted(STORES))
def empty(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[m.Harness]:
    """A blind store of its own for random resources (replaced at each example)."""
    kind = str(request.param)
    opened = m.Harness(blind_store(kind, tmp_path_factory.mktemp("random")), DOUBLE_LACKS if kind == DOUBLE else ())
    try:
        yield opened
    finally:
        opened.close()


@settings(SETTINGS, max_examples=60)
@given(people_and_search())
def test_random_people_round_trip(empty: m.Harness, drawn: tuple[list[dict[str, Any]], str, tuple[str, str]]) -> None:
    """Random people (accents, ligatures, case folds that change length) are found by what
    they were given, exactly as the reference evaluator finds them over the plaintext."""
    people, rtype, param = drawn
    empty.replace_all(people)
    q = m.query(rtype, param)
    try:
        found = empty.keys(q)
    except FhirError as refused:
        assert "longer than" in refused.issues[0].diagnostics
        return
    assert set(found) == empty.world.expected(q), (param, found)


def test_the_generated_searches_find_something(harness: m.Harness) -> None:
    """The vocabulary is shared, so searches do match: the property above is not vacuous."""
    for params in ([("name", "hél")], [("family:exact", "Lefèvre")], [("address-city", "SAINT-E")],
                   [("identifier", "urn:oid:1.2.250.1.213.1.4.8|2030575123456")], [("email", "zoë.nguyễn@exemple.fr")]):
        assert harness.keys(m.query("Patient", *params)), params


def test_birth_dates_stay_range_searchable_beside_protected_names(harness: m.Harness) -> None:
    q = m.query("Patient", ("birthdate", "ge1960"), ("birthdate", "lt1962-06"), ("given", "zo"))
    found = harness.keys(q)
    assert found == [("Patient", "acc10"), ("Patient", "acc11"), ("Patient", "acc12")]
    assert set(found) == harness.world.expected(q)


def test_include_and_revinclude_follow_references_as_before(harness: m.Harness) -> None:
    page = harness.run(harness.store.search(m.query(
        "RelatedPerson", ("name", "zoë"), ("_include", "RelatedPerson:patient"))))
    assert [v.id for v in page.matches] == ["rel12"] and [v.id for v in page.included] == ["acc12"]
    page = harness.run(harness.store.search(m.query(
        "Patient", ("family:exact", "Straße"), ("_revinclude", "RelatedPerson:patient"),
        ("_revinclude", "Observation:subject"))))
    assert [v.id for v in page.matches] == ["acc6"]
    assert sorted(v.id for v in page.included) == ["obs6", "rel6"]


def test_conditional_create_on_an_identifier_finds_the_existing_patient(harness: m.Harness) -> None:
    """An EHR's idempotent push (If-None-Exist: identifier=system|value): the second
    create finds the first by its identifier's digest and creates nothing."""
    pushed = {"resourceType": "Patient", "id": "pushed", "name": [{"family": "Poussé"}],
              "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1840275000111"}]}
    criteria = m.query("Patient", ("identifier", "urn:oid:1.2.250.1.213.1.4.8|1840275000111"))
    first = harness.run(harness.store.commit([ConditionalCreate(criteria, m.write(pushed))]))
    again = dict(pushed, id="pushed-again")
    second = harness.run(harness.store.commit([ConditionalCreate(criteria, m.write(again))]))
    try:
        assert first[0].outcome == "created"
        assert second[0].outcome != "created" and second[0].version is not None
        assert second[0].version.id == "pushed"
        assert harness.keys(criteria) == [("Patient", "pushed")]
    finally:
        harness.run(harness.store.commit([Delete("Patient", "pushed")]))


def test_a_system_level_search_is_rewritten_per_type(harness: m.Harness) -> None:
    """`[base]?_type=Patient,Practitioner&name=…` (http.html#search): each type's own digests."""
    for params in ([("_type", "Patient,Practitioner"), ("name", "hél")],
                   [("_type", "Patient,Practitioner,RelatedPerson"), ("telecom", "+33 6 04")],
                   [("_type", "Patient,Practitioner"), ("family:exact", "Lefèvre,Gottlieb")]):
        q = m.query(None, *params)
        found = harness.keys(q)
        assert found and set(found) == harness.world.expected(q), params


def test_a_long_start_with_value_is_refused_and_exact_still_finds_it(harness: m.Harness) -> None:
    long_name = "Jean-François d'Arc de Montmorency"
    with pytest.raises(FhirError) as refused:
        harness.keys(m.query("Patient", ("family", long_name)))
    assert refused.value.issues[0].expression == ("family",)
    assert harness.keys(m.query("Patient", ("family:exact", long_name))) == [("Patient", "acc12")]
    assert harness.keys(m.query("Patient", ("family", long_name[:CAP]))) == [("Patient", "acc12")]


@pytest.mark.parametrize("kind", sorted(STORES))
def test_rows_written_before_chains_match_no_search(kind: str, tmp_path: Path) -> None:
    """A store indexed before chains (one `p` token per prefix, the exact digest on the last)
    and not rebuilt: its old rows answer no search, not the one-letter ones only (a link is
    not the head of an old token), so the rebuild docs/blind-indexes.md asks for is not
    half-needed; values written since are found."""
    harness = m.Harness(STORES[kind](tmp_path))
    try:
        old = BLIND.digest
        rows = [StringEntry("family", old("Patient.family", "p", "dupont"[:n]), "") for n in range(1, 6)]
        rows.append(StringEntry("family", old("Patient.family", "p", "dupont"), old("Patient.family", "x", "Dupont")))
        before = {"resourceType": "Patient", "id": "before", "name": [{"family": "Dupont"}]}
        harness.run(harness.store.commit([Write("Patient", "before", before, rows)]))
        assert isinstance(harness.store, (SqliteStore, MongoStore))
        harness.store.blind = BLIND
        harness.run(harness.store.commit([m.write({**before, "id": "since"})]))
        for params in ([("family", "d")], [("family", "du")], [("family", "dupont")], [("family:exact", "Dupont")]):
            assert harness.keys(m.query("Patient", *params)) == [("Patient", "since")], params
    finally:
        harness.close()


SORTS = ["family", "-family", "name,-birthdate", "-given,_id", "birthdate,-name", "address-city,family"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[m.Harness]:
    """The same resources in a store without blind indexes: the reference order."""
    opened = m.Harness(STORES["sqlite"](tmp_path_factory.mktemp("plain")))
    try:
        opened.replace_all(RESOURCES)
        yield opened
    finally:
        opened.close()


@pytest.mark.parametrize("sort", SORTS)
def test_sort_on_a_protected_parameter_gives_the_plaintext_order(
        harness: m.Harness, plain: m.Harness, sort: str) -> None:
    for params in ([("_sort", sort)], [("_sort", sort), ("address-postalcode", "9")]):
        q = m.query("Patient", *params)
        assert harness.keys(q, count=3) == plain.keys(q, count=3), sort


def test_sort_past_the_limit_is_refused(harness: m.Harness) -> None:
    small = BlindIndex(["Patient.family"], BLIND.digest, default_registry(), sort_limit=3)
    store = harness.store
    assert isinstance(store, (SqliteStore, MongoStore))
    store.blind, kept = small, store.blind
    try:
        with pytest.raises(FhirError) as refused:
            harness.keys(m.query("Patient", ("_sort", "family")))
        [issue] = refused.value.issues
        assert issue.code == "too-costly" and issue.expression == ("_sort",)
        # A count needs no order: past the limit, the same total as without the sort.
        everyone = harness.run(store.search(m.query("Patient", ("_summary", "count")))).total
        for params in ([("_summary", "count")], [("_count", "0"), ("_total", "accurate")]):
            page = harness.run(store.search(m.query("Patient", ("_sort", "family"), *params)))
            assert page.matches == () and page.total == everyone and everyone > 3, params
        # Within the limit it sorts.
        assert harness.keys(m.query("Patient", ("_sort", "family"), ("family:exact", "Müller"))) == [
            ("Patient", "acc3")]
    finally:
        store.blind = kept
