"""The trial catalogue (trials/catalogue.py): ECLAIRE conformance on write, idempotent
loading by primary identifier, the ECLAIRE search parameters (profiles/SearchParameter-
ResearchStudy-*.json) and `fhir-server trials load`."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server import cli
from fhir_server.app import open_context
from fhir_server.model.errors import FhirError, Issue, Kind
from fhir_server.model.validation import Validator
from fhir_server.search import extract
from fhir_server.services.context import Context
from fhir_server.settings import Settings
from fhir_server.trials import catalogue
from fhir_server.trials.catalogue_sites import with_site_status
from tests.trials.eclaire import example_unit, fake_study_example

pytestmark = pytest.mark.anyio


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[Context]:
    async with open_context(settings) as context:
        yield context


async def _version(ctx: Context, type_: str, id: str) -> int | None:
    found = await ctx.store.read(type_, id)
    return None if found is None else found.version


async def test_the_ig_example_is_accepted_with_its_references_and_stored_under_its_primary_identifier(
        ctx: Context) -> None:
    outcomes = (await catalogue.store_all(ctx, example_unit())).outcomes
    assert outcomes == {"created": 6}
    assert await _version(ctx, "ResearchStudy", "2022-500014-26-00") == 1
    assert await _version(ctx, "Group", "2022-500014-26-00-enrollment-group") == 1


async def test_loading_twice_makes_no_new_version_and_one_change_one_version(ctx: Context) -> None:
    await catalogue.store_all(ctx, example_unit())
    assert (await catalogue.store_all(ctx, example_unit())).outcomes == {"unchanged": 6}
    assert await _version(ctx, "ResearchStudy", "2022-500014-26-00") == 1
    changed = (await catalogue.store_all(ctx, example_unit(status="closed-to-accrual"))).outcomes
    assert changed == {"unchanged": 5, "updated": 1}
    assert await _version(ctx, "ResearchStudy", "2022-500014-26-00") == 2


async def test_the_fake_study_example_is_refused_with_its_outcome_measure_errors_and_nothing_stored(
        ctx: Context) -> None:
    with pytest.raises(FhirError) as caught:
        await catalogue.store_trial(ctx, [fake_study_example(), *example_unit()[1:]])
    paths = [e for issue in caught.value.issues if issue.severity == "error" for e in issue.expression]
    # The four errors, in whatever order the validator walks the profile.
    assert sorted(paths) == ["ResearchStudy.extension[8].extension",
                             "ResearchStudy.extension[8].extension[3].valueReference",
                             "ResearchStudy.extension[9].extension",
                             "ResearchStudy.extension[9].extension[3].valueReference"]
    assert await ctx.store.count("ResearchStudy") == 0
    assert await ctx.store.count("Group") == 0


@pytest.mark.parametrize("break_it, path", [
    (lambda s: s.__setitem__("sponsor", {"reference": "Organization/x"}), "ResearchStudy.sponsor"),
    (lambda s: s["identifier"].append({"use": "official", "value": "again"}), "ResearchStudy.identifier"),
    (lambda s: s.__setitem__("enrollment", [{"reference": "Patient/p"}]), "ResearchStudy.enrollment[0]"),
    (lambda s: s["extension"][5].pop("valueInstant") and s["extension"][5].__setitem__(
        "valueDate", "2024-05-31"), "ResearchStudy.extension[5].valueDate"),
    (lambda s: s["extension"][0]["extension"][4].__setitem__("valueString", "x"),
     "ResearchStudy.extension[0].extension[4].valueString"),
], ids=["sponsor 0..0", "identifier slice idPrimary 0..1", "enrollment targetProfile",
        "extension type", "R5 cross-version extension associatedParty"])
async def test_each_rule_refuses_a_broken_study(
        ctx: Context, break_it: Callable[[dict[str, Any]], object], path: str) -> None:
    unit = example_unit()
    if "valueString" in path:
        unit[0]["extension"][0]["extension"][4].pop("valueReference")
    break_it(unit[0])
    with pytest.raises(FhirError) as caught:
        await catalogue.store_trial(ctx, unit)
    assert any(path in issue.expression[0] for issue in caught.value.issues if issue.expression), \
        [i.expression for i in caught.value.issues]
    assert await ctx.store.count("ResearchStudy") == 0


async def test_an_extensible_binding_miss_is_a_warning_and_the_study_is_stored(ctx: Context) -> None:
    unit = example_unit()
    unit[0]["extension"][6]["valueCodeableConcept"]["coding"][0]["code"] = "paused"
    assert ctx.validator.outcome(unit[0])[0].severity == "warning"
    assert (await catalogue.store_trial(ctx, unit))["created"] == 6


async def test_a_misspelled_eclaire_extension_url_is_a_warning_at_its_path(ctx: Context) -> None:
    """ECLAIRE slices ResearchStudy.extension open: an extension no slice names is allowed, so
    a misspelled URL is not refused; but in a namespace whose definitions we hold it is named
    in a warning, never passed in silence (its recruitment status would be lost unseen)."""
    unit = example_unit()
    misspelled = unit[0]["extension"][6]["url"] + "s"  # eclaire-recruitment-statuss
    unit[0]["extension"][6]["url"] = misspelled
    warnings = [i for i in ctx.validator.outcome(unit[0]) if i.code == "not-found"]
    assert [(i.severity, i.expression) for i in warnings] == [
        ("warning", ("ResearchStudy.extension[6]",))]
    assert misspelled in (warnings[0].diagnostics or "")
    assert (await catalogue.store_trial(ctx, unit))["created"] == 6


async def test_an_extension_of_a_namespace_we_do_not_hold_gets_no_warning(ctx: Context) -> None:
    study = example_unit()[0]
    study["extension"].append({"url": "https://example.org/fhir/StructureDefinition/local-note",
                               "valueString": "x"})
    assert [i for i in ctx.validator.outcome(study) if i.code == "not-found"] == []


def test_the_eclaire_search_parameters_index_what_r4_lacks() -> None:
    study = {**example_unit()[0], "id": "s", "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z"}}
    entries = {(e.param, getattr(e, "id", None) or getattr(e, "code", None))
               for e in extract(study) if e.param in
               ("enrollment", "condition", "recruitment-status", "associated-party", "sponsor")}
    assert entries == {
        ("enrollment", "2022-500014-26-00-enrollment-group"),
        ("condition", "10065430"), ("condition", "10070575"), ("condition", None),  # its text
        ("recruitment-status", "recruiting"),
        ("associated-party", "2022-500014-26-00-secondary-sponsor"),
        ("sponsor", "2022-500014-26-00-secondary-sponsor"),
    }


def test_a_collaborator_is_an_associated_party_but_not_the_sponsor() -> None:
    study = {**example_unit()[0], "id": "s", "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z"}}
    study["extension"][0]["extension"][1]["valueCodeableConcept"]["coding"][0]["code"] = "collaborator"
    params = {e.param for e in extract(study)}
    assert "associated-party" in params and "sponsor" not in params


def test_trials_load_reads_bundles_and_ndjson_and_is_idempotent(
        tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("FHIR_SERVER_PUBLISH_DEFINITIONS", "false")
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": r} for r in example_unit("2022-500001-01-00")]}
    (tmp_path / "a.json").write_bytes(orjson.dumps(bundle))
    (tmp_path / "b.ndjson").write_bytes(b"\n".join(orjson.dumps(r) for r in example_unit("2022-500002-02-00")))
    assert cli.main(["trials", "load", str(tmp_path)]) == 0
    assert "11 created" in capsys.readouterr().err  # ctis is shared: one resource
    assert cli.main(["trials", "load", str(tmp_path)]) == 0
    assert "11 unchanged" in capsys.readouterr().err


async def test_a_load_stores_the_good_trials_and_reports_the_refused_one_with_its_paths(ctx: Context) -> None:
    bad = example_unit("2022-500002-02-00")
    bad[0]["sponsor"] = {"reference": "Organization/x"}
    report = await catalogue.store_all(ctx, [*example_unit("2022-500001-01-00"), *bad,
                                             *example_unit("2022-500003-03-00")])
    assert report.outcomes["created"] == 11  # two trials and ctis; nothing of the bad one
    [(what, why)] = report.failures
    assert what == "ResearchStudy/2022-500002-02-00-example"
    assert "ResearchStudy.sponsor" in [e for i in why.issues for e in i.expression]
    assert await ctx.store.read("ResearchStudy", "2022-500002-02-00") is None
    assert await ctx.store.read("Group", "2022-500002-02-00-enrollment-group") is None


def test_trials_load_of_a_broken_file_fails_naming_the_line(
        tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(settings.data_dir))
    (tmp_path / "b.ndjson").write_text('{"resourceType": "Group"}\n{oops\n')
    assert cli.main(["trials", "load", str(tmp_path)]) == 1
    assert "b.ndjson line 2: not JSON" in capsys.readouterr().err


async def test_only_catalogue_types_are_stored(ctx: Context) -> None:
    """A source (a file, a remote base) cannot slip other resources in through the catalogue."""
    intruder = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Martin"}]}
    report = await catalogue.store_all(ctx, [*example_unit(), intruder])
    assert report.outcomes == {"created": 6}
    assert await ctx.store.read("Patient", "p1") is None


def _counting_checks(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the resources (by type) that go through `Validator.outcome` from now on."""
    seen: Counter[str] = Counter()
    outcome = Validator.outcome

    def counted(self: Validator, resource: Any, profiles: Sequence[str] = (),
                depth: int | None = None) -> list[Issue]:
        seen[resource.get("resourceType") if isinstance(resource, dict) else "?"] += 1
        return outcome(self, resource, profiles, depth)

    monkeypatch.setattr(Validator, "outcome", counted)
    return seen


async def test_load_validates_the_bundle_once_as_it_is_stored(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Bundle is validated whole, each study under the id it is stored under (its primary
    identifier), and nothing of it again when written."""
    unit = example_unit()
    assert unit[0]["id"] != unit[0]["identifier"][0]["value"]
    seen = _counting_checks(monkeypatch)
    answer = await catalogue.load(ctx, {"resourceType": "Bundle", "type": "collection",
                                        "entry": [{"resource": r} for r in unit]})
    assert answer["parameter"][0] == {"name": "created", "valueInteger": 6}
    assert seen == {"Bundle": 1}
    assert await _version(ctx, "ResearchStudy", "2022-500014-26-00") == 1


async def test_load_validates_a_study_under_the_id_it_is_stored_under(ctx: Context) -> None:
    """A study sent with an id that is not a FHIR id but with a valid primary identifier is
    stored under the identifier, as `trials load` and `trials sync` store it; with neither
    valid, the id sent is refused at its path."""
    unit = example_unit()
    unit[0]["id"] = "not an id!"
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in unit]}
    assert (await catalogue.load(ctx, bundle))["parameter"][0] == {"name": "created", "valueInteger": 6}
    assert await _version(ctx, "ResearchStudy", "2022-500014-26-00") == 1
    unit[0]["identifier"][0]["value"] = "not an id either"
    with pytest.raises(FhirError) as caught:
        await catalogue.load(ctx, bundle)
    assert [e for i in caught.value.issues for e in i.expression] == ["Bundle.entry[0].resource.id"]
    assert await ctx.store.count("ResearchStudy") == 1


async def test_load_still_checks_a_study_whose_stored_additions_change_it(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """A study already stored under the id it is sent with, with a site status added here: the
    version written is not the one sent (the status kept), so it is validated again."""
    unit = example_unit()
    unit[0]["id"] = unit[0]["identifier"][0]["value"]
    await catalogue.store_all(ctx, unit)
    stored = orjson.loads((await ctx.store.read("ResearchStudy", unit[0]["id"])).body)  # type: ignore[union-attr]
    site = unit[0]["site"][0]["reference"]
    await catalogue.store_all(ctx, [with_site_status(stored, site, "recruiting", date(2026, 12, 1))])
    unit[0]["title"] = "A new title"
    seen = _counting_checks(monkeypatch)
    answer = await catalogue.load(ctx, {"resourceType": "Bundle", "type": "collection",
                                        "entry": [{"resource": r} for r in unit]})
    assert {p["name"]: p["valueInteger"] for p in answer["parameter"]} == {
        "created": 0, "updated": 1, "unchanged": 5}
    assert seen == {"Bundle": 1, "ResearchStudy": 1}
    kept = orjson.loads((await ctx.store.read("ResearchStudy", unit[0]["id"])).body)  # type: ignore[union-attr]
    assert kept["title"] == "A new title" and "extension" in kept["site"][0]


async def test_load_of_a_bundle_with_a_broken_trial_is_refused_whole_with_its_paths(ctx: Context) -> None:
    good, bad = example_unit("2022-500001-01-00"), example_unit("2022-500002-02-00")
    bad[0]["sponsor"] = {"reference": "Organization/x"}
    entries = [{"resource": r} for r in [*good, *bad]]
    with pytest.raises(FhirError) as caught:
        await catalogue.load(ctx, {"resourceType": "Bundle", "type": "collection", "entry": entries})
    assert caught.value.kind is Kind.UNPROCESSABLE
    errors = [e for i in caught.value.issues if i.severity == "error" for e in i.expression]
    assert errors == [f"Bundle.entry[{len(good)}].resource.sponsor"]
    for kind in ("ResearchStudy", "Group", "Location", "Organization"):
        assert await ctx.store.count(kind) == 0
