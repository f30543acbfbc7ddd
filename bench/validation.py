"""Validation cost per layer, and what each layer catches (no timed assertions anywhere).

Run: `.venv/bin/python bench/validation.py [--repeat N] [--quick]`. Reads the Synthea bundles
(/work/shared/data/synthea) and the official R4 examples (/work/shared/data/fhir-r4/examples).

Prints, for docs/validation.md:
1. start-up: loading the schema, compiling it per type, importing fhir.resources;
2. µs per resource for the schema layer, the model layer and both, by resource type;
3. a catch matrix: seeded faults, and which of the raw official schema, the schema layer
   (corrected, with the R4 rules of fhir_server/model/schema_rules.py) and the R4B models
   report them;
4. the mutation corpus of tests/model/test_rules.py: how many of its faults each layer finds;
5. the write path with the French identifier rules (µs of CPU per ~2 KB resource) and profile
   validation (FR Core Patient INS, ECLAIRE ResearchStudy): p50 / p95 per resource. Only this
   section: `--profiles`.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhir_server.model import validation as v
from fhir_server.model.types import RESOURCE_TYPES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
Resource = dict[str, Any]


def load() -> tuple[list[Resource], list[Resource], list[Resource]]:
    """Synthea entry resources, Synthea bundles (whole), official examples."""
    bundles = [orjson.loads(p.read_bytes()) for p in sorted((SHARED / "synthea").glob("*.json"))]
    entries = [e["resource"] for b in bundles for e in b.get("entry", [])]
    examples = [
        orjson.loads(p.read_bytes()) for p in sorted((SHARED / "fhir-r4/examples").glob("*.json"))
    ]
    return entries, bundles, examples


def ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def startup() -> None:
    print("## Start-up")
    t = time.perf_counter()
    v._definitions()
    print(f"schema: gunzip + parse + correct + rules {ms(t):5.1f} ms (once per process)")
    compile_ms = []
    for name in sorted(RESOURCE_TYPES):
        t = time.perf_counter()
        v._schema(name)
        compile_ms.append(ms(t))
    print(
        f"schema: compile one type             {statistics.median(compile_ms):8.1f} ms median, "
        f"{max(compile_ms):.1f} max, {sum(compile_ms):.0f} ms for all 146"
    )
    t = time.perf_counter()
    import fhir.resources.R4B  # noqa: F401

    print(f"models: import fhir.resources.R4B    {ms(t):8.1f} ms")
    t = time.perf_counter()
    v._model("Patient")
    print(f"models: first Patient model class    {ms(t):8.1f} ms")
    t = time.perf_counter()
    for name in sorted(v._agreeing_types()):
        v._model(name)
    print(f"models: all {len(v._agreeing_types())} model classes          {ms(t):8.1f} ms")


def per_resource(resources: list[Resource], repeat: int, label: str) -> None:
    """µs per resource for each layer, by type (best of `repeat` runs, as timeit advises)."""
    schema_only, both = v.Validator(use_models=False), v.Validator(use_models=True)

    def model_only(r: Resource) -> None:
        # What fhir.resources alone costs: the whole resource, nested resources included.
        if r["resourceType"] in v._agreeing_types():
            with contextlib.suppress(Exception):  # invalid input costs time too
                v._model(r["resourceType"]).model_validate(r)

    layers: dict[str, Callable[[Resource], Any]] = {
        "schema": schema_only.issues,
        "models": model_only,
        "both": both.issues,
    }
    for layer in layers.values():  # warm: compile schemas, build model classes
        for r in resources:
            layer(r)
    by_type: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    for r in resources:
        counts[r["resourceType"]] += 1
    for name, layer in layers.items():
        for r in resources:
            best = min(_timed(layer, r) for _ in range(repeat))
            by_type[r["resourceType"]][name] += best
    print(f"\n## µs per resource: {label} ({len(resources)} resources, best of {repeat})")
    print(f"{'type':28} {'n':>5} {'schema':>9} {'models':>9} {'both':>9}")
    top = sorted(counts, key=lambda t: -counts[t])[:15]
    for t in top:
        n = counts[t]
        row = " ".join(f"{by_type[t][k] / n:9.1f}" for k in layers)
        print(f"{t:28} {n:5} {row}")
    total = {k: sum(by_type[t][k] for t in by_type) / len(resources) for k in layers}
    print(f"{'ALL (mean)':28} {len(resources):5} " + " ".join(f"{total[k]:9.1f}" for k in layers))


def _timed(fn: Callable[[Resource], Any], r: Resource) -> float:
    t = time.perf_counter()
    fn(r)
    return (time.perf_counter() - t) * 1e6


def whole_bundles(bundles: list[Resource]) -> None:
    print("\n## Whole Synthea transaction Bundles (entries validated inside)")
    for use_models in (False, True):
        validator = v.Validator(use_models=use_models)
        validator.issues(bundles[0])
        t = time.perf_counter()
        for b in bundles:
            validator.issues(b)
        entries = sum(len(b.get("entry", [])) for b in bundles)
        print(
            f"use_models={use_models!s:5}: {ms(t) / len(bundles):8.1f} ms per bundle "
            f"({entries / len(bundles):.0f} entries on average)"
        )


# --- What each layer catches --------------------------------------------------------------


def _raw_schema() -> Callable[[Resource], bool]:
    """The published schema as is: True when it reports an error."""
    import jsonschema_rs

    raw = orjson.loads(gzip.decompress((v._DATA / "fhir.schema.json.gz").read_bytes()))
    cache: dict[str, Any] = {}

    def rejects(r: Resource) -> bool:
        name = r["resourceType"]
        if name not in cache:
            root = {"$ref": f"#/definitions/{name}", "definitions": raw["definitions"]}
            cache[name] = jsonschema_rs.Draft6Validator(root)
        return not cache[name].is_valid(r)

    return rejects


def _models_reject(r: Resource) -> bool | None:
    """None when the type is schema-only (R4B models not used)."""
    from pydantic import ValidationError

    if r["resourceType"] not in v._agreeing_types():
        return None
    try:
        v._model(r["resourceType"]).model_validate(r)
    except ValidationError:
        return True
    return False


def _patient(**changes: Any) -> Resource:
    base: Resource = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe"}]}
    return {**base, **changes}


def _observation(**changes: Any) -> Resource:
    base: Resource = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    return {**base, **changes}


FAULTS: dict[str, Resource] = {
    "unknown element": _patient(foo=1),
    "wrong JSON type (string for boolean)": _patient(active="true"),
    "string where an object belongs": _patient(maritalStatus="married"),
    "number inside an array of objects": _patient(name=[5]),
    "number as Narrative.div": _patient(text={"status": "generated", "div": 5}),
    "bad date format": _patient(birthDate="1974-13-45"),
    "impossible date (Feb 30)": _patient(birthDate="2019-02-30"),
    "bad code (not in required value set)": _patient(gender="f"),
    "bad id": _patient(id="a b"),
    "decimal as integer": _patient(multipleBirthInteger=1.5),
    "0 as positiveInt": _observation(
        valueSampledData={"origin": {"value": 1}, "period": 1, "dimensions": 0, "data": "1"}
    ),
    "empty array": _patient(photo=[]),
    "empty object": _patient(contact=[{}]),
    "empty string": _patient(name=[{"family": ""}]),
    "two values for a choice element": _observation(valueString="a", valueBoolean=True),
    "missing required complex element": {"resourceType": "Observation", "status": "final"},
    "missing required primitive": {"resourceType": "Observation", "code": {"text": "x"}},
    "missing required primitive, nested": {
        "resourceType": "Questionnaire",
        "status": "draft",
        "item": [{"linkId": "1", "type": "group", "item": [{"type": "string"}]}],
    },
    "missing required choice (medication[x])": {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/1"},
    },
    "extension without url": _patient(extension=[{"valueString": "s"}]),
    "two values in an extension": _patient(
        extension=[{"url": "http://x", "valueString": "s", "valueBoolean": True}]
    ),
    "impossible dateTime (Apr 31)": _observation(effectiveDateTime="2020-04-31T10:00:00Z"),
    "modifierExtension where R4 has none": _observation(
        effectiveTiming={"repeat": {"modifierExtension": [{"url": "http://x", "valueString": "s"}]}}
    ),
    "primitive given by its extensions only (valid)": {
        "resourceType": "Observation",
        "_status": {"extension": [{"url": "http://x", "valueCode": "unknown"}]},
        "code": {"text": "x"},
    },
    "contained resource with bad code": _patient(
        contained=[{"resourceType": "Patient", "gender": "f"}]
    ),
    "Bundle entry with unknown element": {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": _patient(foo=1)}],
    },
    "no-break space in a string (valid)": _patient(name=[{"family": "A\u00a0B"}]),
    "fhirVersion 4.0.1 (valid)": {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2020",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
    },
}


def catches() -> None:
    raw = _raw_schema()
    schema = v.Validator(use_models=False)
    print("\n## Seeded faults: reported by (yes = an error)")
    print(f"{'fault':48} {'raw schema':>10} {'schema':>10} {'R4B models':>10}")
    for name, resource in FAULTS.items():
        models = _models_reject(copy.deepcopy(resource))
        cells = (raw(resource), bool(schema.issues(resource)), models)
        print(f"{name:48} " + " ".join(f"{_yes(c):>10}" for c in cells))


def mutations() -> None:
    """The mutation corpus of tests/model/test_rules.py, by kind of change."""
    from tests.model import test_rules as corpus

    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for mutation, resource in corpus.chosen_mutations():
        mutated = mutation.applied(resource)
        counts = kinds[mutation.what.split()[0]]
        counts[0] += 1
        counts[1] += corpus.findings(mutated) == mutation.expected
        counts[2] += corpus.model_findings(mutated) == mutation.expected
    print(f"\n## Mutations of {len(corpus.corpus())} resources: found exactly (all issues as made)")
    print(f"{'change':20} {'n':>6} {'schema':>8} {'models':>8}")
    for kind, (n, schema, models) in kinds.items():
        print(f"{kind:20} {n:6} {schema:8} {models:8}")


def _yes(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "-")


# --- French identifiers and profiles ---------------------------------------------------


def _qualified_patient(i: int) -> Resource:
    """A Patient with a qualified INS identity and its traits (fr-core-patient-ins)."""
    from fhir_server.model import french_ids as f

    first13 = f"2690549{588000 + i % 1000:06d}"
    return {
        "resourceType": "Patient", "meta": {"profile": [f"{f.FR_CORE}/StructureDefinition/fr-core-patient-ins"]},
        "extension": [
            {"url": f.IDENTITY_RELIABILITY_URL, "extension": [
                {"url": "identityStatus", "valueCoding": {"code": "QUAL"}}]},
            {"url": f.BIRTHPLACE_URL, "valueAddress": {"extension": [
                {"url": f.INSEE_CODE_URL, "valueCoding": {"code": "49588"}}]}}],
        "identifier": [{"use": "official", "system": f.NIR_SYSTEM,
                        "value": f"{first13}{f.nir_key(first13):02d}"},
                       {"system": "urn:example:ipp", "value": f"IPP{i}"}],
        "name": [{"use": "official", "family": "MARTIN", "given": ["Claire", "Anne"]}],
        "gender": "female", "birthDate": "1969-05-12",
        "address": [{"line": [f"{i} rue de la Paix"], "city": "Angers", "postalCode": "49000"}],
    }


def _percentiles(fn: Callable[[], Any], n: int) -> tuple[float, float, float]:
    """(mean CPU µs, p50 µs, p95 µs) of `n` calls: CPU time over the run (2 shared cores make
    wall time noisy), percentiles from per-call wall time."""
    fn()
    samples = []
    cpu = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e6)
    mean_cpu = (time.process_time() - cpu) / n * 1e6
    samples.sort()
    return mean_cpu, samples[n // 2], samples[int(n * 0.95)]


def identities_and_profiles(entries: list[Resource], examples: list[Resource]) -> None:
    from fhir_server.model import profiles

    print("\n## Write path (schema + French identifier rules + meta.profile), ~2 KB resources")
    validator = v.Validator(use_models=False)
    sized = [r for r in (*entries, *examples) if 1536 <= len(orjson.dumps(r)) <= 2560]
    for r in sized:
        validator.outcome(r)  # compile each type's schema first
    cpu = time.process_time()
    for r in sized:
        validator.outcome(r)
    mean = (time.process_time() - cpu) / len(sized) * 1e6
    size = statistics.mean(len(orjson.dumps(r)) for r in sized)
    cpu = time.process_time()
    for r in sized:
        list(validator._schema_pass(r, None))
    schema = (time.process_time() - cpu) / len(sized) * 1e6
    print(f"{len(sized)} resources of 1.5-2.5 KB (mean {size:.0f} B): {mean:.1f} µs CPU each "
          f"(schema pass alone {schema:.1f})")
    patients = [_qualified_patient(i) for i in range(200)]
    print(f"qualified INS Patient ({len(orjson.dumps(patients[0]))} B), write path:"
          f" {_percentiles(lambda: [validator.outcome(p) for p in patients], 50)[0] / 200:.1f} µs CPU")
    print("\n## Profile validation, per resource (schema included)")
    print(f"{'profile':40} {'CPU µs':>8} {'p50 µs':>8} {'p95 µs':>8}")
    ins = profiles.FR_CORE_PATIENT_INS
    rows = {"fr-core-patient-ins (meta.profile)": lambda: validator.outcome(patients[7]),
            "fr-core-patient-ins ($validate profile)": lambda: validator.outcome(patients[7], [ins])}
    study = _eclaire_study()
    rows["eclaire-researchstudy (meta.profile)"] = lambda: validator.outcome(study)
    for label, fn in rows.items():
        mean_cpu, p50, p95 = _percentiles(fn, 2000)
        print(f"{label:40} {mean_cpu:8.1f} {p50:8.1f} {p95:8.1f}")


def _eclaire_study() -> Resource:
    base = "https://interop.esante.gouv.fr/ig/fhir/eclaire"
    return {
        "resourceType": "ResearchStudy",
        "meta": {"profile": [f"{base}/StructureDefinition/eclaire-researchstudy"]},
        "extension": [
            {"url": f"{base}/StructureDefinition/eclaire-review-date", "valueInstant": "2024-03-01T10:00:00Z"},
            {"url": f"{base}/StructureDefinition/eclaire-recruitment-status", "valueCodeableConcept": {
                "coding": [{"system": f"{base}/CodeSystem/eclaire-status-recruitment-code-system",
                            "code": "recruiting"}]}}],
        "identifier": [{"use": "official", "system": "https://euclinicaltrials.eu", "value": "2024-500001-10-00"},
                       {"use": "secondary", "system": "https://clinicaltrials.gov", "value": "NCT01234567"}],
        "title": "Essai ALPHA", "status": "active",
        "condition": [{"id": "disease-condition", "text": "Cancer du sein"}],
        "enrollment": [{"reference": "Group/g1"}], "site": [{"reference": "Location/l1"}],
        "arm": [{"name": "A"}],
    }


def main(argv: list[str]) -> None:
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 5
    if "--profiles" in argv:
        entries, _, examples = load()
        identities_and_profiles(entries, examples)
        return
    startup()
    entries, bundles, examples = load()
    if "--quick" in argv:
        entries = entries[:2000]
    per_resource(entries, repeat, "Synthea entries")
    per_resource(examples, repeat, "official R4 examples")
    whole_bundles(bundles)
    catches()
    mutations()
    identities_and_profiles(entries, examples)


if __name__ == "__main__":
    main(sys.argv[1:])
