"""Disclosure control of the investigator's counts (trials/inverse_counts.py), per-investigator
pseudonyms and one referral request per candidate (trials/prescreening.py)."""

from __future__ import annotations

import itertools
import random
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings, strategies as st

from fhir_server.trials import inverse_counts
from fhir_server.trials.eligibility import Trial
from fhir_server.trials.eligibility_format import Criterion
from fhir_server.trials.inverse_counts import BASE, Cell, Figures, member_digest, parameters, rounded, set_digest
from tests.builders import consent
from tests.http.helpers import send
from tests.trials.conftest import served
from tests.trials.eligibility_builders import condition, patient
from tests.trials.inverse_world import DR, STUDY, TEAM, InverseWorld, build, new_day
from tests.trials.test_inverse_match import _parameters, _parts, _value

KEY = b"k" * 32


@pytest.fixture()
def world(tmp_path_factory: pytest.TempPathFactory, signing_keys: bytes,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[InverseWorld]:
    monkeypatch.setattr(inverse_counts, "_SNAPSHOTS", weakref.WeakKeyDictionary())
    with served("sqlite", tmp_path_factory.mktemp("disclosure"), signing_keys) as client:
        build(client)
        client.app.state.oauth.registry.add_backend_client(  # type: ignore[attr-defined]
            "site", "system/*.rs", jwks={"keys": []}, acts_for=[TEAM])
        yield InverseWorld(client)


def _add_patient(client: TestClient, id: str, birth: bool = True) -> None:
    body = {**patient(id=id), "address": [{"postalCode": "75013"}]}
    if not birth:
        body.pop("birthDate", None)
    for resource in (body, {**condition("C50.4", id=f"{id}-c"), "subject": {"reference": f"Patient/{id}"}},
                     {**consent(id, actor=DR), "id": f"{id}-k0"}, {**consent(id, "research"), "id": f"{id}-k1"}):
        r = send(client, "PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
        assert r.status_code in (200, 201), r.text


def _figures(world: InverseWorld, who: str = "investigator") -> dict[str, Any]:
    r = world.match(STUDY, who)
    assert r.status_code == 200, r.text
    found = _parameters(r.json())
    out: dict[str, Any] = {n: _value(found[n][0]) for n in ("population", "pruned", "evaluated", "eligible",
                                                            "undetermined")}
    out["criteria"] = {c["key"]: c for c in (_parts(p) for p in found.get("criterion", []))}
    out["candidates"] = [_parts(p)["pseudonym"] for p in found.get("candidate", [])]
    return out


# Controlled rounding, checked against every world an attacker cannot rule out.

CELLS: tuple[Cell, ...] = (("pruned",), ("eligible", "Location/a", "1=met"),
                           ("undetermined", "", "1=unknown"))
SITES = ("Location/a",)


def _published(sizes: tuple[int, ...], draw: tuple[bool, ...] | None = None) -> list[dict[str, Any]]:
    """The parameters for a world of these cell sizes: rounded by the server's rule, or, with
    `draw`, each cell rounded down (False) or up (True) as the draw says."""
    members = {cell: [f"{cell[0]}-{n}" for n in range(size)] for cell, size in zip(CELLS, sizes)}
    everyone = [m for found in members.values() for m in found]
    cells, rows = inverse_counts.controlled(KEY, (len(everyone), set_digest(KEY, everyone)),
                                            {c: (len(m), set_digest(KEY, m)) for c, m in members.items() if m})
    # One criterion: its verdicts part the evaluated patients as the verdicts do, and round alike.
    assert rows == _rows(cells) or not any(n for c, n in cells.items() if c != ("pruned",))
    if draw is not None:
        cells = {cell: size if size % BASE == 0 else size // BASE * BASE + BASE * up
                 for cell, size, up in zip(CELLS, sizes, draw)}
    return parameters(Figures("2026-12-06", cells, {"1": "Breast cancer"}, SITES, (), _rows(cells)))


def _rows(cells: dict[Cell, int]) -> dict[str, dict[str, int]]:
    """The criteria's rows as sums of `cells`."""
    rows: dict[str, dict[str, int]] = {}
    for cell, n in cells.items():
        for item in cell[2:]:
            criterion, _, verdict = item.partition("=")
            rows.setdefault(criterion, {}).setdefault(verdict, 0)
            rows[criterion][verdict] += n
    return rows


def _figures_of(published: list[dict[str, Any]]) -> dict[str, int]:
    """Every published count by a path name (site and criterion parts flattened)."""
    found = {}
    for parameter in published:
        if "valueInteger" in parameter:
            found[parameter["name"]] = parameter["valueInteger"]
        for n, part in enumerate(parameter.get("part", [])):
            if "valueInteger" in part:
                found[f"{parameter['name']}.{parameter['part'][0].get('valueString', n)}.{part['name']}"] = \
                    part["valueInteger"]
    return found


def _exact(sizes: tuple[int, ...]) -> dict[str, int]:
    """The figures of a world of these cell sizes, unrounded."""
    cells = dict(zip(CELLS, sizes))
    return _figures_of(parameters(Figures("d", cells, {"1": "Breast cancer"}, SITES, (), _rows(cells))))


@settings(max_examples=15, deadline=None)
@given(st.tuples(*(st.integers(0, 9) for _ in CELLS)))
def test_no_published_figure_lets_one_recompute_a_small_count(sizes: tuple[int, ...]) -> None:
    """Every world whose cells could round to what is published (each cell at most BASE - 1
    away) is one an attacker cannot rule out: each figure of 1 to BASE - 1 in the real world
    takes another value in one of them, however the figures are added or subtracted."""
    seen = _figures_of(_published(sizes))
    assert all(v % BASE == 0 for v in seen.values())
    exact = _exact(sizes)
    others: dict[str, set[int]] = {}
    for candidate in itertools.product(range(0, 12), repeat=len(CELLS)):
        for draw in itertools.product((False, True), repeat=len(CELLS)):
            if _figures_of(_published(candidate, draw)) == seen:
                for name, value in _exact(candidate).items():
                    others.setdefault(name, set()).add(value)
                break
    for name, value in exact.items():
        assert value in others.get(name, set())  # the real world is among them
        if 0 < value < BASE:
            assert others[name] - {value}, f"{name} = {value} can be worked out from {seen}"


# Figures of the same patients across studies (averaging them must not give the exact count).

POPULATION = [f"p{n}" for n in range(13)]  # rounds to 10 or 15


def _study(seed: int, pruned: frozenset[str] | None = None) -> dict[str, int]:
    """The published figures of a study of POPULATION drawn at random: its `pruned` patients
    (else half of them at random), the others in cells of random verdict and site."""
    rng = random.Random(seed)
    tally = inverse_counts.Tally()
    for member in POPULATION:
        if not (member in pruned if pruned is not None else rng.random() < 0.5):
            cell = (rng.choice(("eligible", "undetermined")), rng.choice(("Location/a", "")), ())
            tally.add(cell, member_digest(KEY, member))
    cells, _ = tally.rounded(KEY, (len(POPULATION), set_digest(KEY, POPULATION)), Trial(f"s{seed}", ()))
    return _figures_of(parameters(Figures("2026-12-06", cells, {}, SITES, ())))


def test_the_population_figure_is_drawn_from_the_population_alone() -> None:
    """The reviewer's average: the population split into cells differently by each study,
    each cell rounded apart, gave a figure whose mean over studies was the exact population
    (and two days' means the exact number of newcomers). Now it is one draw, that of the
    population's own members, in every study."""
    figures = [_study(seed)["population"] for seed in range(300)]
    assert set(figures) == {rounded(KEY, POPULATION)}
    assert sum(figures) / len(figures) != len(POPULATION)


def test_studies_pruning_the_same_patients_give_them_one_figure() -> None:
    pruned = frozenset(POPULATION[:6])
    studies = [_study(seed, pruned) for seed in range(100)]
    assert len({(s["pruned"], s["evaluated"]) for s in studies}) == 1
    assert all(s["pruned"] + s["evaluated"] == s["population"] for s in studies)


def test_a_criterion_gives_the_same_patients_one_row_in_every_study() -> None:
    """Studies pruning the same patients and sharing a criterion (its verdicts alike) but
    cutting them otherwise (another criterion, verdicts, sites): the criterion's row is one,
    not a sum of cells cut differently in each study, whose mean would be the exact count
    (the 2 patients of unknown age)."""
    trial = Trial("s", (Criterion("1", "age", "Aged 18 or more"), Criterion("2", "ecog", "ECOG 0-1")))
    rows = set()
    for seed in range(100):
        rng = random.Random(seed)
        tally = inverse_counts.Tally()
        for n, member in enumerate(POPULATION[4:]):
            age = "unknown" if n < 2 else "met"
            cell = (rng.choice(("eligible", "undetermined")), rng.choice(("Location/a", "")),
                    (age, rng.choice(("met", "unknown"))))
            tally.add(cell, member_digest(KEY, member))
        _, found = tally.rounded(KEY, (len(POPULATION), set_digest(KEY, POPULATION)), trial)
        rows.add(tuple(sorted(found["1"].items())))
    assert len(rows) == 1


def test_parts_share_out_their_whole_each_about_unbiased() -> None:
    """Each part goes up with a probability close to its remainder / BASE (Pareto order
    sampling), and the parts add up to the whole's figure whatever the draw."""
    sizes = {"a": 1, "b": 3, "c": 7, "d": 10, "e": 2}
    members = {p: [f"{p}{n}" for n in range(size)] for p, size in sizes.items()}
    everyone = [m for found in members.values() for m in found]
    sums = dict.fromkeys(sizes, 0)
    runs = 2000
    for run in range(runs):
        key = run.to_bytes(4, "big") * 8
        whole = rounded(key, everyone)
        found = inverse_counts.apportioned(key, whole, {p: (len(m), set_digest(key, m)) for p, m in members.items()})
        assert sum(found.values()) == whole and found["d"] == 10
        assert all(0 <= found[p] - sizes[p] + sizes[p] % BASE <= BASE for p in sizes if sizes[p] % BASE)
        for part, n in found.items():
            sums[part] += n
    for part, size in sizes.items():
        assert abs(sums[part] / runs - size) < 0.35, (part, sums[part] / runs)


def test_a_row_whose_cells_all_rounded_to_zero_is_listed_as_if_empty() -> None:
    """Evaluated patients whose cells all rounded to 0 (a criterion's row of zeros, a site
    of zeros that is not the study's) answer exactly as no evaluated patient at all."""
    small = {("pruned",): 10, ("eligible", "Location/gone", "1=met"): 0, ("undetermined", "", "1=unknown"): 0}
    published = parameters(Figures("2026-12-06", small, {"1": "Breast cancer"}, SITES, (), _rows(small)))
    assert not [p for p in published if p["name"] == "criterion"]
    assert published == parameters(Figures("2026-12-06", {("pruned",): 10}, {}, SITES, ()))


def test_rounding_is_unbiased_and_stable() -> None:
    members = [f"p{n}" for n in range(7)]
    assert rounded(KEY, members) == rounded(KEY, list(reversed(members)))
    assert rounded(KEY, members[:5]) == 5
    draws = [rounded(KEY, [f"p-{n}"]) for n in range(2000)]
    assert set(draws) == {0, 5} and 0.15 < draws.count(5) / len(draws) < 0.25  # up 1 time in 5


def test_complementary_figures_do_not_single_out_a_patient(world: InverseWorld) -> None:
    """The reviewer's subtraction: population - evaluated and a criterion's cells against
    evaluated no longer give 1 (the lung patient pruned; the patient of unknown age)."""
    for n in range(5):
        _add_patient(world.client, f"x{n}")
    _add_patient(world.client, "nobirth", birth=False)
    found = _figures(world)
    age = found["criteria"]["2"]
    assert found["population"] - found["evaluated"] == found["pruned"]
    assert found["evaluated"] - age["met"] - age["not-met"] - age["not-applicable"] == age["unknown"]
    assert found["pruned"] % BASE == 0 and age["unknown"] % BASE == 0


def test_two_calls_around_one_consent_answer_alike_until_the_next_day(
        world: InverseWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inverse_counts, "BASE", 1)  # exact figures: the newcomer would show
    before = _figures(world)
    _add_patient(world.client, "newcomer", birth=False)
    assert _figures(world) == before
    new_day(world.client)
    after = _figures(world)
    assert after["population"] == before["population"] + 1


# Pseudonyms per investigator; one referral request per candidate.

def _ask(world: InverseWorld, who: str, alias: str, note: str = "Slot in January.") -> Any:
    body = {"resourceType": "Parameters", "parameter": [{"name": "candidate", "valueString": alias},
                                                        {"name": "note", "valueString": note}]}
    return send(world.client, "POST", f"/fhir/ResearchStudy/{STUDY}/$ask-referral", body, **world.headers(who))


def _requests(world: InverseWorld) -> list[dict[str, Any]]:
    found = world.client.get("/fhir/Communication?subject=Patient/bea&_count=100",
                             headers=world.headers("ehr")).json()
    return [e["resource"] for e in found.get("entry", [])]


def test_each_investigator_sees_their_own_pseudonyms(world: InverseWorld) -> None:
    [mine] = _figures(world, "investigator")["candidates"]
    [theirs] = _figures(world, "site")["candidates"]
    assert mine != theirs
    assert _ask(world, "site", mine).status_code == 404  # another's pseudonym names nobody
    assert _ask(world, "site", theirs).status_code == 200


def test_an_investigator_asks_once_per_candidate(world: InverseWorld) -> None:
    [alias] = _figures(world)["candidates"]
    assert _ask(world, "investigator", alias, "x" * 2001).status_code == 400
    assert _requests(world) == []
    first = _ask(world, "investigator", alias)
    assert first.json()["issue"][0]["diagnostics"] == "1 referring physician(s) asked."
    for _ in range(3):
        again = _ask(world, "investigator", alias)
        assert again.status_code == 200
        assert "already asked" in again.json()["issue"][0]["diagnostics"]
    assert len(_requests(world)) == 1
