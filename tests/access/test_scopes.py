"""SMART scopes (SMART App Launch 2.x scopes-and-launch-context.html): v1 and v2 syntax,
granular queries, context scopes, interaction checks, restrictions and down-scoping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.access import (
    CONTEXT_SCOPES,
    LEVELS,
    ContextScope,
    Grant,
    Interaction,
    Level,
    ResourceScope,
    parse_scope,
    parse_scopes,
    required_permission,
)

LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
LAB_ONLY = (("category", "laboratory"),)


@pytest.mark.parametrize(
    ("text", "level", "resource_type", "letters", "query"),
    [
        # SMART v1 suffixes, read with their v2 meaning.
        ("patient/Observation.read", "patient", "Observation", "rs", ()),
        ("user/*.write", "user", "*", "cud", ()),
        ("system/*.*", "system", "*", "cruds", ()),
        ("patient/Patient.*", "patient", "Patient", "cruds", ()),
        # SMART v2 letters.
        ("patient/Observation.rs", "patient", "Observation", "rs", ()),
        ("user/*.cruds", "user", "*", "cruds", ()),
        ("system/Patient.r", "system", "Patient", "r", ()),
        ("user/Encounter.c", "user", "Encounter", "c", ()),
        ("patient/Condition.cu", "patient", "Condition", "cu", ()),
        ("user/Patient.d", "user", "Patient", "d", ()),
        ("patient/Observation.s", "patient", "Observation", "s", ()),
        ("system/*.cud", "system", "*", "cud", ()),
        ("user/Observation.crds", "user", "Observation", "crds", ()),
        # Granular v2 scopes.
        (f"patient/*.rs?category={LAB}", "patient", "*", "rs", (("category", LAB),)),
        (
            "user/Observation.s?category=vital-signs&code=http://loinc.org|8867-4",
            "user",
            "Observation",
            "s",
            (("category", "vital-signs"), ("code", "http://loinc.org|8867-4")),
        ),
        (
            "patient/Observation.r?code=http%3A%2F%2Floinc.org%7C8867-4&note=a%26b",
            "patient",
            "Observation",
            "r",
            (("code", "http://loinc.org|8867-4"), ("note", "a&b")),
        ),
        (
            "patient/*.rs?category=a&category=b",
            "patient",
            "*",
            "rs",
            (("category", "a"), ("category", "b")),
        ),
    ],
)
def test_resource_scopes(
    text: str, level: Level, resource_type: str, letters: str, query: tuple[tuple[str, str], ...]
) -> None:
    scope = ResourceScope(level, resource_type, frozenset(letters), query, text)
    assert parse_scope(text) == scope
    assert parse_scopes(text) == Grant(scopes=(scope,))


@pytest.mark.parametrize(
    "text",
    [
        "patient/Observation.sr",  # letters out of order
        "patient/Observation.dus",
        "patient/Observation.rr",
        "patient/Observation.rx",
        "patient/Observation.",  # no letters
        "patient/Observation",
        "patient/Observation.readwrite",
        "patient/Observation.Read",
        "patient/*",
        "Patient/Observation.rs",  # scopes are case-sensitive
        "patient/observation.rs",
        "practitioner/Observation.rs",
        "patient/Foo.rs",  # not an R4 resource type
        "patient.Observation.rs",
        "/Observation.rs",
        "patient/Observation.read?category=laboratory",  # granular scopes are v2 only
        "patient/Observation.rs?",
        "patient/Observation.rs?category",
        "patient/Observation.rs?category=",
        "patient/Observation.rs?=laboratory",
        "patient/Observation.rs?category=laboratory&",
        "launch/imagingstudy",  # extension context the server does not offer
        "email",
        "__profilePhoto.manage",
        "https://ehr.example.org/scopes/profilePhoto.manage",
    ],
)
def test_unknown_or_malformed_scopes_are_ignored(text: str) -> None:
    assert parse_scope(text) is None
    assert parse_scopes(text) == Grant(ignored=(text,))
    assert parse_scopes(text).text() == ""


@pytest.mark.parametrize("name", CONTEXT_SCOPES)
def test_context_scopes(name: ContextScope) -> None:
    grant = parse_scopes(name)
    assert grant == Grant(context=frozenset({name}))
    assert grant.text() == name


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("", ""),
        ("   ", ""),
        ("patient/*.rs openid", "openid patient/*.rs"),
        (
            "patient/*.rs offline_access bogus launch/patient patient/*.rs fhirUser openid",
            "openid fhirUser launch/patient offline_access patient/*.rs",
        ),
        # v1 scopes stay v1: servers SHOULD return them as they were requested.
        ("user/Observation.read  user/Observation.rs", "user/Observation.read user/Observation.rs"),
        (
            f"online_access launch patient/*.s?category={LAB}",
            f"launch online_access patient/*.s?category={LAB}",
        ),
    ],
)
def test_text_normalises_and_round_trips(text: str, normalised: str) -> None:
    grant = parse_scopes(text)
    assert grant.text() == normalised
    assert parse_scopes(normalised) == Grant(grant.scopes, grant.context)


def test_mixed_scope_string() -> None:
    grant = parse_scopes("launch openid patient/Observation.sr patient/*.rs nonsense patient/*.rs")
    assert grant.context == {"launch", "openid"}
    assert [scope.text for scope in grant.scopes] == ["patient/*.rs"]
    assert grant.ignored == ("patient/Observation.sr", "nonsense")


@pytest.mark.parametrize(
    ("interaction", "instance", "letter"),
    [
        ("read", False, "r"),
        ("vread", False, "r"),
        ("search", False, "s"),
        ("create", False, "c"),
        ("update", False, "u"),
        ("patch", False, "u"),
        ("delete", False, "d"),
        ("history", True, "r"),  # instance history sits with read
        ("history", False, "s"),  # type and system history sit with search
        ("operation", False, "r"),  # placeholder until operations are mapped one by one
    ],
)
def test_required_permission(interaction: Interaction, instance: bool, letter: str) -> None:
    assert required_permission(interaction, instance=instance) == letter


@pytest.mark.parametrize(
    ("scopes", "interaction", "resource_type", "levels", "instance", "expected"),
    [
        ("patient/Observation.rs", "read", "Observation", None, False, ["patient/Observation.rs"]),
        ("patient/Observation.s", "search", "Observation", None, False, ["patient/Observation.s"]),
        ("patient/Observation.rs", "create", "Observation", None, False, []),
        ("patient/Observation.rs", "read", "Condition", None, False, []),
        ("patient/*.rs", "vread", "Condition", None, False, ["patient/*.rs"]),
        ("user/Observation.write", "update", "Observation", None, False, ["user/Observation.write"]),
        ("user/Observation.write", "read", "Observation", None, False, []),
        ("system/*.*", "patch", "Patient", {"system"}, False, ["system/*.*"]),
        ("user/Patient.d", "delete", "Patient", None, False, ["user/Patient.d"]),
        # History: instance history needs r, type and system history need s.
        ("patient/Observation.r", "history", "Observation", None, True, ["patient/Observation.r"]),
        ("patient/Observation.r", "history", "Observation", None, False, []),
        ("patient/Observation.s", "history", "Observation", None, False, ["patient/Observation.s"]),
        ("patient/Observation.s", "history", "Observation", None, True, []),
        # A request across all types ("*") is only met by wildcard scopes.
        ("patient/Observation.rs", "search", "*", None, False, []),
        ("patient/*.rs", "search", "*", None, False, ["patient/*.rs"]),
        # Levels stay apart.
        ("patient/*.cruds", "read", "Patient", {"user"}, False, []),
        ("user/*.cruds", "read", "Patient", {"patient"}, False, []),
        ("user/*.cruds", "read", "Patient", {"patient", "user"}, False, ["user/*.cruds"]),
        (
            "patient/*.r user/Observation.s system/Observation.rs",
            "search",
            "Observation",
            None,
            False,
            ["user/Observation.s", "system/Observation.rs"],
        ),
        # Granular scopes permit; restrictions() says what they restrict.
        (
            f"patient/Observation.rs?category={LAB}",
            "search",
            "Observation",
            None,
            False,
            [f"patient/Observation.rs?category={LAB}"],
        ),
        ("", "read", "Patient", None, False, []),
    ],
)
def test_allows(
    scopes: str,
    interaction: Interaction,
    resource_type: str,
    levels: set[Level] | None,
    instance: bool,
    expected: list[str],
) -> None:
    permitting = parse_scopes(scopes).allows(interaction, resource_type, levels, instance=instance)
    assert [scope.text for scope in permitting] == expected


@pytest.mark.parametrize(
    ("scopes", "interaction", "levels", "expected"),
    [
        ("patient/Observation.rs", "search", None, None),
        ("patient/Observation.rs?category=laboratory", "search", None, [LAB_ONLY]),
        (
            "patient/Observation.rs?category=laboratory"
            " patient/Observation.rs?category=vital-signs&status=final",
            "search",
            None,
            [(("category", "laboratory"),), (("category", "vital-signs"), ("status", "final"))],
        ),
        # One unrestricted scope lifts every restriction.
        ("patient/Observation.rs?category=laboratory patient/*.rs", "read", None, None),
        # ...but only for the letters it holds.
        ("patient/Observation.r?category=laboratory patient/*.s", "search", None, None),
        ("patient/Observation.r?category=laboratory patient/*.s", "read", None, [LAB_ONLY]),
        # The same query twice is one restriction.
        (
            "patient/Observation.r?category=laboratory patient/Observation.rs?category=laboratory",
            "read",
            None,
            [LAB_ONLY],
        ),
        # Levels stay apart here too.
        (
            "patient/Observation.r?category=laboratory user/Observation.r",
            "read",
            {"patient"},
            [LAB_ONLY],
        ),
        ("patient/Observation.r?category=laboratory user/Observation.r", "read", None, None),
        # Nothing permits: nothing may be selected.
        ("patient/Observation.rs", "delete", None, []),
        ("patient/Condition.rs", "read", None, []),
    ],
)
def test_restrictions(
    scopes: str,
    interaction: Interaction,
    levels: set[Level] | None,
    expected: list[tuple[tuple[str, str], ...]] | None,
) -> None:
    assert parse_scopes(scopes).restrictions(interaction, "Observation", levels) == expected


@pytest.mark.parametrize(
    ("granted", "requested", "kept", "refused"),
    [
        ("patient/Observation.rs", "patient/Observation.rs", "patient/Observation.rs", ""),
        ("patient/Observation.rs", "patient/Observation.r", "patient/Observation.r", ""),
        ("patient/*.rs", "patient/Observation.r", "patient/Observation.r", ""),
        ("patient/*.read", "patient/Observation.rs", "patient/Observation.rs", ""),
        ("patient/Observation.rs", "patient/Observation.read", "patient/Observation.read", ""),
        # Scope equivalence: r and s held by separate scopes cover rs.
        ("patient/Patient.r patient/Patient.s", "patient/Patient.rs", "patient/Patient.rs", ""),
        ("patient/*.r patient/Patient.s", "patient/Patient.rs", "patient/Patient.rs", ""),
        # Escalation: more letters.
        ("patient/Observation.rs", "patient/Observation.cruds", "", "patient/Observation.cruds"),
        ("patient/*.read", "patient/Observation.write", "", "patient/Observation.write"),
        # Escalation: wider type, or another type.
        ("patient/Observation.rs", "patient/*.rs", "", "patient/*.rs"),
        ("patient/Observation.rs", "patient/Condition.rs", "", "patient/Condition.rs"),
        # Escalation: another level, either way.
        ("patient/*.cruds", "user/Observation.r", "", "user/Observation.r"),
        ("user/*.cruds", "patient/Observation.r", "", "patient/Observation.r"),
        ("system/*.cruds", "user/Observation.r", "", "user/Observation.r"),
        # Queries: dropping or changing one widens; keeping, reordering or adding one narrows.
        (
            "patient/Observation.r?category=laboratory",
            "patient/Observation.r",
            "",
            "patient/Observation.r",
        ),
        (
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs?category=vital-signs",
            "",
            "patient/Observation.rs?category=vital-signs",
        ),
        (
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs?category=laboratory",
            "",
        ),
        (
            "patient/Observation.rs?category=laboratory&status=final",
            "patient/Observation.rs?status=final&category=laboratory",
            "patient/Observation.rs?status=final&category=laboratory",
            "",
        ),
        (
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.s?category=laboratory&status=final",
            "patient/Observation.s?category=laboratory&status=final",
            "",
        ),
        (
            "patient/Observation.rs",
            "patient/Observation.rs?category=laboratory",
            "patient/Observation.rs?category=laboratory",
            "",
        ),
        # Context scopes: only those granted before survive.
        (
            "openid launch/patient patient/*.r",
            "openid fhirUser patient/*.r",
            "openid patient/*.r",
            "fhirUser",
        ),
        ("openid", "offline_access openid", "openid", "offline_access"),
        # Unreadable requested scopes stay ignored.
        ("patient/*.rs", "bogus patient/Observation.r", "patient/Observation.r", "bogus"),
        ("", "patient/Observation.r launch", "", "patient/Observation.r launch"),
    ],
)
def test_narrow(granted: str, requested: str, kept: str, refused: str) -> None:
    narrowed = parse_scopes(granted).narrow(parse_scopes(requested))
    assert narrowed.text() == kept
    assert narrowed.ignored == tuple(refused.split())


@pytest.mark.parametrize(
    ("scopes", "level", "expected"),
    [
        ("patient/*.rs", "patient", True),
        ("patient/*.rs", "user", False),
        ("openid launch/patient", "patient", False),
        ("user/Observation.r system/*.s", "system", True),
    ],
)
def test_has_level(scopes: str, level: Level, expected: bool) -> None:
    assert parse_scopes(scopes).has_level(level) is expected


LETTER_INTERACTION: dict[str, Interaction] = {
    "c": "create",
    "r": "read",
    "u": "update",
    "d": "delete",
    "s": "search",
}

QUERIES = ["", "?category=laboratory", "?category=vital-signs", "?status=final&category=laboratory"]
v2_scopes = st.builds(
    "{}/{}.{}{}".format,
    st.sampled_from(LEVELS),
    st.sampled_from(["*", "Observation", "Patient", "Condition"]),
    st.sets(st.sampled_from("cruds"), min_size=1).map(lambda s: "".join(c for c in "cruds" if c in s)),
    st.sampled_from(QUERIES),
)
grants = st.lists(v2_scopes, max_size=6).map(lambda texts: parse_scopes(" ".join(texts)))


@given(grants)
def test_a_grant_covers_itself(grant: Grant) -> None:
    assert grant.narrow(grant) == grant
    assert parse_scopes(grant.text()) == grant


@given(grants, grants)
def test_narrow_never_escalates(granted: Grant, requested: Grant) -> None:
    narrowed = granted.narrow(requested)
    assert set(narrowed.scopes) <= set(requested.scopes)
    texts = {scope.text for scope in narrowed.scopes} | set(narrowed.ignored)
    assert texts == {scope.text for scope in requested.scopes}
    assert granted.narrow(narrowed) == narrowed
    for scope in narrowed.scopes:
        for letter in scope.permissions:
            # What the narrowed scope selects lies within what the grant lets through.
            interaction = LETTER_INTERACTION[letter]
            allowed = granted.restrictions(interaction, scope.resource_type, {scope.level})
            assert allowed is None or any(set(r) <= set(scope.query) for r in allowed)
