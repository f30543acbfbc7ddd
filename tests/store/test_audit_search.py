"""Every AuditEvent search parameter the server offers answers the same on every store.

The trail is searched by patients and auditors (docs/audit.md, "Searching the trail"); the
SQLite store may index AuditEvents differently from other resources (docs/storage.md), so
these cases hold each offered parameter, with each modifier and prefix, to the reference
evaluator (search/match.py) on SQLite and on the MongoDB store (its double), over generated
trails: single and repeated values, missing elements, instants of every precision, sorting
by date and `_lastUpdated` both ways, `_include`/`_revinclude`, chains and `_has` into and
out of AuditEvent, several clauses (one drives, the others are per-row checks), paging and
`_total`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from fhir_server.search import default_registry, parse_query
from fhir_server.search.registry import NOT_OFFERED
from tests.store import search_model as m
from tests.store.conftest import STORES
from tests.store.search_model import BOOLEANS, Harness, between, choice
from tests.store.test_search_property import (
    PREFIX,
    SETTINGS,
    Param,
    _string_value,
    check,
    clauses,
    date_values,
    missing,
    references,
    seeded,
    strings,
    tokens,
)

TYPES = (("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "RESTful Operation"),
         ("http://dicom.nema.org/resources/ontology/DCM", "110112", "Query"),
         (None, "rest", None))
SUBTYPES = (("http://hl7.org/fhir/restful-interaction", "read", "read"),
            ("http://hl7.org/fhir/restful-interaction", "search-type", "search type"),
            ("http://hl7.org/fhir/restful-interaction", "vread", None),
            (None, "read", None))
ACTIONS = ("C", "R", "U", "D", "E")
OUTCOMES = ("0", "4", "8")
ALTIDS = ("test-client", "app-2", "Test-Client")
ROLES = (("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"),
         ("http://terminology.hl7.org/CodeSystem/object-role", "24", "Query"))
POLICIES = ("http://example.org/policy/a", "http://example.org/policy/b")
# Instants of every precision the type allows, some in other zones, some at a second's edge.
RECORDED = ("1962-04-17T10:30:00Z", "1962-04-17T10:30:00.5+02:00", "2020-01-01T00:00:00Z",
            "2020-01-01T10:30:00.123456Z", "2020-12-31T23:59:59.999-05:00",
            "2021-04-17T23:59:59Z", "2021-04-28T10:30:00+02:00", "1961-01-01T00:00:00Z")


# Fewer examples than the general property tests (one type here), not shrunk: a failing trail
# is printed whole, and shrinking one took minutes.
AUDIT = settings(SETTINGS, max_examples=60, phases=[Phase.explicit, Phase.generate])


def _coding(draw: st.DrawFn, options: tuple[tuple[str | None, str, str | None], ...]) -> dict[str, Any]:
    system, code, display = draw(choice(options))
    return {k: v for k, v in (("system", system), ("code", code), ("display", display)) if v}


def _reference(draw: st.DrawFn, *types: str) -> dict[str, Any]:
    rtype = draw(choice(types))
    return {"reference": f"{rtype}/{draw(choice(m.IDS[rtype] + ('zz',)))}"}


@st.composite
def audit_event(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    """An AuditEvent as the trail holds them, and the shapes other writers may give it:
    zero, one or several subtypes, agents (so `altid`) and entities, missing elements."""
    event: dict[str, Any] = {"resourceType": "AuditEvent", "id": rid,
                             "type": _coding(draw, TYPES), "recorded": draw(choice(RECORDED))}
    if subtypes := draw(st.lists(st.sampled_from(SUBTYPES), max_size=2, unique=True)):
        event["subtype"] = [_coding(draw, (s,)) for s in subtypes]
    if draw(between(0, 4)):
        event["action"] = draw(choice(ACTIONS))
    if draw(between(0, 4)):
        event["outcome"] = draw(choice(OUTCOMES))
    agents = []
    for _ in range(draw(between(1, 2))):
        agent: dict[str, Any] = {"requestor": draw(BOOLEANS)}
        if draw(BOOLEANS):
            agent["who"] = _reference(draw, "Patient", "Practitioner")
        if draw(between(0, 3)):
            agent["altId"] = draw(choice(ALTIDS))
        if draw(BOOLEANS):
            agent["role"] = [{"coding": [_coding(draw, ROLES)]}]
        if draw(BOOLEANS):
            agent["policy"] = [draw(choice(POLICIES))]
        agents.append(agent)
    event["agent"] = agents
    event["source"] = {"observer": _reference(draw, "Organization")}
    if draw(BOOLEANS):
        event["source"]["site"] = draw(choice(("site-a", "site-b")))
    entities = []
    for _ in range(draw(between(0, 3))):
        entity: dict[str, Any] = {"what": _reference(draw, "Patient", "Observation")}
        if draw(BOOLEANS):
            entity["name"] = draw(choice(m.NAMES))
        if draw(BOOLEANS):
            entity["type"] = {"system": "http://hl7.org/fhir/resource-types", "code": "Patient"}
        entities.append(entity)
    if entities:
        event["entity"] = entities
    return event


@st.composite
def trails(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A few patients, practitioners, organizations and observations, the AuditEvents about
    them, and Provenances targeting some events (chains and `_has` into AuditEvent)."""
    out: list[dict[str, Any]] = []
    for rtype in ("Patient", "Practitioner", "Organization", "Observation"):
        for rid in draw(st.lists(st.sampled_from(m.IDS[rtype]), unique=True, min_size=1)):
            out.append(draw(m.resources(rtype, rid)))
    events = [draw(audit_event(f"ae{n}")) for n in range(draw(between(3, 14)))]
    for n in range(draw(between(0, 3))):
        targets = draw(st.lists(st.sampled_from([e["id"] for e in events]), min_size=1, max_size=2))
        out.append({"resourceType": "Provenance", "id": f"pv{n}", "recorded": "2021-01-01T00:00:00Z",
                    "target": [{"reference": f"AuditEvent/{t}"} for t in targets],
                    "agent": [{"who": {"reference": "Practitioner/d0"}}]})
    return out + events


def _token_values(options: tuple[tuple[str | None, str, str | None], ...]) -> st.SearchStrategy[str]:
    forms = [f for s, c, _ in options for f in (c, f"|{c}", *((f"{s}|{c}", f"{s}|") if s else ()))]
    return st.sampled_from(forms + ["zz"])


OFFERED = sorted(code for code in default_registry().for_type("AuditEvent")
                 if ("AuditEvent", code) not in NOT_OFFERED and not code.startswith("_"))


def _audit_params() -> list[Param]:
    """Every offered AuditEvent parameter with its modifiers, from the vocabularies above."""
    plain = st.sampled_from
    return [
        *tokens("type", _token_values(TYPES), ("RESTful", "Query", "rest")),
        *tokens("subtype", _token_values(SUBTYPES), ("read", "search")),
        *tokens("action", plain(ACTIONS + ("r", "X"))),
        *tokens("outcome", plain(OUTCOMES + ("1",))),
        *tokens("altid", plain(ALTIDS + ("zz", "|test-client"))),
        *tokens("agent-role", _token_values(ROLES), ("Patient", "Query")),
        *tokens("entity-type", plain(("Patient", "http://hl7.org/fhir/resource-types|Patient", "zz"))),
        *tokens("site", plain(("site-a", "site-b", "|site-a", "zz"))),
        ("date", date_values()), ("date", date_values()),
        ("date", st.tuples(PREFIX, st.sampled_from(RECORDED)).map("".join)),
        ("policy", plain(POLICIES + ("http://example.org/policy",))),
        ("policy:below", plain(("http://example.org/", "http://example.org/policy/a"))),
        *strings("entity-name"),
        *references("patient", ("Patient",)), *references("agent", ("Patient", "Practitioner")),
        *references("entity", ("Patient", "Observation")), *references("source", ("Organization",)),
        ("patient.name", _string_value(m.NAMES, None)),
        ("agent:Practitioner.name", _string_value(m.NAMES, None)),
        ("entity:Observation.code", st.sampled_from(("8867-4", "http://loinc.org|8480-6"))),
        ("_has:Provenance:target:agent", st.sampled_from(("Practitioner/d0", "Practitioner/d1"))),
        ("_id", st.sampled_from(("ae0", "ae1", "ae5", "zz"))),
        *missing("type", "subtype", "action", "outcome", "altid", "date", "patient", "agent",
                 "entity", "entity-name", "entity-type", "agent-role", "site", "policy", "source"),
    ]


_PARAMS = _audit_params()
# Into AuditEvent: a chain from Provenance, and `_has` from Patient and Practitioner.
_INTO = [
    ("Provenance", "target:AuditEvent.subtype", _token_values(SUBTYPES)),
    ("Provenance", "target:AuditEvent.date", date_values()),
    ("Provenance", "target:AuditEvent.altid", st.sampled_from(ALTIDS)),
    ("Provenance", "target:AuditEvent.outcome:missing", st.sampled_from(("true", "false"))),
    ("Patient", "_has:AuditEvent:patient:action", st.sampled_from(ACTIONS)),
    ("Patient", "_has:AuditEvent:entity:date", date_values()),
    ("Patient", "_has:AuditEvent:patient:type", _token_values(TYPES)),
    ("Practitioner", "_has:AuditEvent:agent:subtype", _token_values(SUBTYPES)),
    ("Patient", "_has:AuditEvent:patient:altid:missing", st.sampled_from(("true", "false"))),
]


@pytest.fixture(scope="module", params=sorted(STORES))
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    yield from m.harness(request.param, tmp_path_factory.mktemp("audit"))


def test_the_cases_cover_every_offered_parameter() -> None:
    covered = {name.split(":")[0].split(".")[0] for name, _ in _PARAMS}
    assert set(OFFERED) <= covered, set(OFFERED) - covered


def _refused(param: tuple[str, str]) -> bool:
    return bool(parse_query("AuditEvent", [param], default_registry(), now=m.NOW)[1])


@st.composite
def audit_queries(draw: st.DrawFn, world: m.World) -> m.Query:
    """1-3 AND-ed AuditEvent parameters (several: one drives, the others are checked per row),
    half of them seeded from a stored event, now and then a chain or `_has` into AuditEvent."""
    if draw(between(0, 5)) == 0:
        rtype, name, values = draw(choice(_INTO))
        return m.query(rtype, (name, draw(values)))
    params = []
    for _ in range(draw(choice((1, 1, 2, 3)))):
        found = draw(seeded(world, "AuditEvent")) if draw(BOOLEANS) else None
        if found is not None and _refused(found):
            found = None  # a chain through `entity` (any type) to a parameter types disagree on
        params.append(found or draw(clauses(_PARAMS)))
    return m.query("AuditEvent", *params)


@AUDIT
@given(data=st.data())
def test_every_offered_parameter_matches_the_reference_evaluator(harness: Harness, data: Any) -> None:
    harness.replace_all(data.draw(trails(), label="trail"))
    for _ in range(6):
        check(harness, data.draw(audit_queries(harness.world), label="query"))


@AUDIT
@given(data=st.data())
def test_updates_and_deletes_of_events_keep_the_index_exact(harness: Harness, data: Any) -> None:
    """Events rewritten with other values, deleted and created again leave no stale rows."""
    harness.replace_all(data.draw(trails(), label="first"))
    events = sorted(k[1] for k in harness.world.bodies if k[0] == "AuditEvent")
    kept = data.draw(st.lists(st.sampled_from(events), unique=True), label="kept")
    others = [body for key, body in harness.world.bodies.items() if key[0] != "AuditEvent"]
    rewritten = [data.draw(audit_event(rid), label="rewritten") for rid in kept]
    harness.replace_all(others + rewritten)
    for _ in range(3):
        check(harness, data.draw(audit_queries(harness.world), label="query"))


@AUDIT
@given(data=st.data(), sort=st.sampled_from(("date", "-date", "_lastUpdated", "-_lastUpdated",
                                             "-date,_lastUpdated", "subtype,-date")))
def test_sorted_pages_follow_the_events_values(harness: Harness, data: Any, sort: str) -> None:
    """`_sort` by date (its start ascending, its end descending), then creation; page by page."""
    harness.replace_all(data.draw(trails(), label="trail"))
    extra = data.draw(st.one_of(st.just(()), st.tuples(clauses(_PARAMS))), label="filter")
    q = m.query("AuditEvent", ("_sort", sort), *extra)
    expected = m.sorted_keys(harness.world, harness.world.expected(q), q.sort)
    assert harness.keys(q, count=3) == expected


@AUDIT
@given(data=st.data())
def test_includes_and_totals(harness: Harness, data: Any) -> None:
    """`_include` of an event's references, `_revinclude` of the events naming a resource,
    `_total=accurate` and `_count`."""
    harness.replace_all(data.draw(trails(), label="trail"))
    world = harness.world
    name, value = data.draw(clauses(_PARAMS), label="filter")
    q = m.query("AuditEvent", (name, value), ("_include", "AuditEvent:patient"),
                ("_include", "AuditEvent:agent"), ("_total", "accurate"), ("_count", "50"))
    page = harness.run(harness.store.search(q))
    expected = world.expected(q)
    assert page.total == len(expected)
    assert {(v.resource_type, v.id) for v in page.matches} == expected
    wanted = {(str(e.type), str(e.id)) for key in expected for e in world.entries[key]
              if isinstance(e, m.ReferenceEntry) and e.param in ("patient", "agent") and e.url is None
              and (e.type, e.id) in world.entries}
    assert {(v.resource_type, v.id) for v in page.included} == wanted

    q = m.query("Patient", ("_revinclude", "AuditEvent:entity"), ("_count", "50"))
    page = harness.run(harness.store.search(q))
    patients = {v.id for v in page.matches}
    wanted = {key for key, entries in world.entries.items() if key[0] == "AuditEvent" and any(
        isinstance(e, m.ReferenceEntry) and e.param == "entity" and e.url is None
        and e.type == "Patient" and e.id in patients for e in entries)}
    assert {(v.resource_type, v.id) for v in page.included} == wanted
