"""The trial catalogue: ECLAIRE ResearchStudies and the Locations, Groups and Organizations
they reference, stored idempotently (docs/catalogue.md).

A trial is identified by its primary identifier (ECLAIRE's `idPrimary` slice: the official
identifier, the EU CT or ID-RCB number), which becomes its id, so the same trial sent by two
sources, or twice, is one resource. A resource whose content (meta aside) equals the stored one
is not written again: loading or syncing twice makes no new version; one change makes one.
What the platform added to a stored study (curated eligibility, site statuses) is kept
(catalogue_local.py).
Writes go through `services/server_writes.py` (validation against the claimed ECLAIRE
profiles, indexing, audit); a trial and what it references are stored together, in units of
work of up to BATCH trials.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..model.errors import FhirError, Kind, fail
from ..model.outcome import operation_outcome
from ..model.validation import Validator
from ..services import server_writes
from ..services.context import Context, Payload
from ..services.crud import check_resource
from ..services.guard import decision
from ..services.server_writes import ServerWrite
from . import catalogue_local

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
CATALOGUE_TYPES = frozenset({"ResearchStudy", "Location", "Group", "Organization"})


def primary_identifier(study: dict[str, Any]) -> str | None:
    """The value of the study's official identifier (ECLAIRE idPrimary), or None."""
    identifiers = study.get("identifier")
    for identifier in identifiers if isinstance(identifiers, list) else ():
        if isinstance(identifier, dict) and identifier.get("use") == "official":
            value = identifier.get("value")
            return value if isinstance(value, str) else None
    return None


def catalogue_id(study: dict[str, Any]) -> str | None:
    """The id a study is stored under: its primary identifier when that is a valid id,
    else the id it came with."""
    primary = primary_identifier(study)
    if primary is not None and _FHIR_ID.fullmatch(primary):
        return primary
    found = study.get("id")
    return found if isinstance(found, str) else None


def trials(resources: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Group catalogue resources into units of one study and the resources it references
    (those not referenced by any study come alone)."""
    by_ref: dict[str, dict[str, Any]] = {}
    studies = []
    for resource in resources:
        if resource.get("resourceType") == "ResearchStudy":
            studies.append(resource)
        elif resource.get("resourceType") in CATALOGUE_TYPES and isinstance(resource.get("id"), str):
            by_ref[f"{resource['resourceType']}/{resource['id']}"] = resource
    used: set[str] = set()
    for study in studies:
        refs = [r for r in _references(study) if r in by_ref and r not in used]
        used.update(refs)
        yield [study, *(by_ref[r] for r in refs)]
    for ref, resource in by_ref.items():
        if ref not in used:
            yield [resource]


def _references(study: dict[str, Any]) -> Iterator[str]:
    """Relative references anywhere in a study (site, enrollment, parties, assigners)."""
    stack: list[Any] = [study]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("reference")
            if isinstance(ref, str):
                yield ref
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"} | {
        "meta": {k: v for k, v in (resource.get("meta") or {}).items()
                 if k not in ("versionId", "lastUpdated", "source")}}


BATCH = 50  # trials per unit of work when loading many: one commit (one fsync) for all


@dataclass
class CatalogueReport:
    """What a load or sync stored: outcomes by kind, and the trials refused with why."""

    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, FhirError]] = field(default_factory=list)  # (trial, why)

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items())) or "nothing stored"
        return "\n".join([kinds, *(f"refused {what}: {_reasons(why)}" for what, why in self.failures)])

    def parameters(self) -> dict[str, Any]:
        """The `$load` answer (profiles/OperationDefinition-ResearchStudy-load.json)."""
        counts = [{"name": k, "valueInteger": self.outcomes[k]} for k in ("created", "updated", "unchanged")]
        refused = [{"name": "refused", "part": [
            {"name": "trial", "valueString": what},
            {"name": "outcome", "resource": operation_outcome(why.issues)}]} for what, why in self.failures]
        return {"resourceType": "Parameters", "parameter": [*counts, *refused]}


def _reasons(error: FhirError) -> str:
    return "; ".join(f"{i.diagnostics} ({', '.join(i.expression)})" if i.expression else i.diagnostics
                     for i in error.issues if i.severity in ("error", "fatal"))


def _prepared(unit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of a trial unit's resources, each with the id it is stored under."""
    prepared = []
    for resource in unit:
        resource = dict(resource)
        if resource["resourceType"] == "ResearchStudy":
            resource["id"] = catalogue_id(resource)
        if not isinstance(resource.get("id"), str):
            raise fail(Kind.UNPROCESSABLE, "required",
                       f"A catalogue {resource['resourceType']} needs an id (a ResearchStudy: "
                       "an id or an official identifier).", expression="id")
        prepared.append(resource)
    return prepared


async def _stored(ctx: Context, resources: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The current content of those of `resources` already stored, by (type, id)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in resources:
        current = await ctx.store.read(resource["resourceType"], resource["id"])
        if current is not None and current.body is not None:
            found[(resource["resourceType"], resource["id"])] = orjson.loads(current.body)
    return found


async def _with_local(ctx: Context, unit: list[dict[str, Any]],
                      stored: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """`unit` with each stored study's local additions kept (catalogue_local.py)."""
    return [await catalogue_local.kept(ctx, r, current)
            if r["resourceType"] == "ResearchStudy" and (current := stored.get(("ResearchStudy", r["id"])))
            else r for r in unit]


def _plan(unit: list[dict[str, Any]], stored: dict[tuple[str, str], dict[str, Any]],
          checked: list[dict[str, Any]] | None = None) -> tuple[list[ServerWrite], Counter[str]]:
    """The writes one (prepared) trial unit needs, unchanged resources left out, and their
    outcomes (`stored`: the current content of those already stored). `checked`: the unit as
    it was validated already, resource by resource; one written as it was checked is not
    validated again (a study stored under another id, or with local additions, is)."""
    outcomes: Counter[str] = Counter()
    writes = []
    for n, resource in enumerate(unit):
        current = stored.get((resource["resourceType"], resource["id"]))
        if current is not None:
            if _content(current) == _content(resource):
                outcomes["unchanged"] += 1
                continue
            outcomes["updated"] += 1
        else:
            outcomes["created"] += 1
        writes.append(ServerWrite(resource, new=False, valid=checked is not None and resource == checked[n]))
    return writes, outcomes


async def store_trial(ctx: Context, unit: list[dict[str, Any]], checked: bool = False) -> Counter[str]:
    """Store one trial unit: each resource created, updated, or left `unchanged`;
    a FhirError (422 with element paths) when one fails its profile, nothing stored.
    `checked`: the unit's resources were validated as given (`store_all`)."""
    prepared = _prepared(unit)
    stored = await _stored(ctx, prepared)
    writes, outcomes = _plan(await _with_local(ctx, prepared, stored), stored, unit if checked else None)
    if writes:
        await server_writes.commit(ctx, writes)
    return outcomes


def _schema_checked(ctx: Context) -> Context:
    """`ctx` validating without the fhir.resources model layer. The R4 schema layer is proven
    to report everything the models report (tests/model/test_rules.py), and every catalogue
    resource is also checked against the ECLAIRE profile it claims; the models, a second
    opinion, cost more than half of an import's CPU (docs/catalogue.md, "Import speed")."""
    if not ctx.validator.use_models:
        return ctx
    return dataclasses.replace(ctx, validator=Validator(use_models=False))


async def store_all(ctx: Context, resources: Iterable[dict[str, Any]], checked: bool = False) -> CatalogueReport:
    """Store every trial unit of `resources`, BATCH trials per unit of work; a trial that
    fails (its profile, say) is reported and the others are stored. `checked`: every
    resource was validated as given (`load`'s Bundle check), so those written unchanged are
    not validated twice."""
    ctx = _schema_checked(ctx)
    report = CatalogueReport()
    batch: list[list[dict[str, Any]]] = []
    for unit in trials(resources):
        batch.append(unit)
        if len(batch) == BATCH:
            await _store_batch(ctx, batch, report, checked)
            batch = []
    await _store_batch(ctx, batch, report, checked)
    return report


async def _store_batch(ctx: Context, batch: list[list[dict[str, Any]]], report: CatalogueReport,
                       checked: bool) -> None:
    try:
        prepared = [_prepared(unit) for unit in batch]
        stored = await _stored(ctx, [r for unit in prepared for r in unit])
        planned = [_plan(await _with_local(ctx, unit, stored), stored, given if checked else None)
                   for unit, given in zip(prepared, batch, strict=True)]
        writes = [w for unit_writes, _ in planned for w in unit_writes]
        if writes:
            await server_writes.commit(ctx, writes)
    except FhirError:
        # Which trial was it? Each alone: the good ones stored, the bad one reported.
        for unit in batch:
            try:
                report.outcomes += await store_trial(ctx, unit, checked)
            except FhirError as exc:
                report.failures.append((f"{unit[0]['resourceType']}/{unit[0].get('id')}", exc))
        return
    for _, outcomes in planned:
        report.outcomes += outcomes


async def load(ctx: Context, body: Any, depth: int | None = None) -> dict[str, Any]:
    """`POST [base]/ResearchStudy/$load`: store the trials of a Bundle, as `store_all`; a
    Parameters of the outcomes. FORBIDDEN unless the caller may create and update any
    resource of every catalogue type; INVALID unless the body is a Bundle; UNPROCESSABLE, nothing stored, when a
    resource in it fails its profile (the Bundle is validated whole, entries' paths named,
    each study under the id it is stored under, as `store_all` stores it; then nothing is
    validated twice). `depth`: the body's levels of objects and arrays, if its parse counted
    them (`Payload.depth`)."""
    _may_load(ctx)
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise fail(Kind.INVALID, "structure", "$load takes a Bundle of trials as its body.",
                   expression="resourceType")
    bundle = _under_catalogue_ids(body)
    # The ids changed on the way are strings: the depth the parse counted still holds.
    check_resource(_schema_checked(ctx), "Bundle", Payload(bundle, bundle, depth))
    return (await store_all(ctx, resources_of(bundle), checked=True)).parameters()


def _under_catalogue_ids(bundle: dict[str, Any]) -> dict[str, Any]:
    """`bundle` with each ResearchStudy entry under its `catalogue_id` (a copy where one
    changes; the rest shared)."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return bundle
    return {**bundle, "entry": [_entry_under_catalogue_id(entry) for entry in entries]}


def _entry_under_catalogue_id(entry: Any) -> Any:
    resource = entry.get("resource") if isinstance(entry, dict) else None
    if not isinstance(resource, dict) or resource.get("resourceType") != "ResearchStudy":
        return entry
    stored_as = catalogue_id(resource)
    if stored_as is None or stored_as == resource.get("id"):
        return entry
    return {**entry, "resource": {**resource, "id": stored_as}}


async def load_ndjson(ctx: Context, body: bytes) -> dict[str, Any]:
    """`$load` of NDJSON (`application/fhir+ndjson`): one resource or Bundle a line, read as
    the CLI reads an `.ndjson` file, then loaded as a collection Bundle of those resources
    (`load`); INVALID naming the line when one is not a JSON object."""
    _may_load(ctx)
    resources = list(_documents(body.splitlines(), "the body"))
    return await load(ctx, {"resourceType": "Bundle", "type": "collection",
                            "entry": [{"resource": r} for r in resources]})


def _may_load(ctx: Context) -> None:
    """FORBIDDEN unless the caller may create and update any resource of every catalogue
    type: the load writes as the server, so a granular scope (`Group.cu?type=device`) would
    not hold for what it stores."""
    for resource_type in sorted(CATALOGUE_TYPES):
        for interaction in ("create", "update"):
            if not decision(ctx, interaction, resource_type).unrestricted:
                raise fail(Kind.FORBIDDEN, "forbidden", f"$load needs {interaction} on every "
                           f"{resource_type}; the access token allows it on some only.")


def read_files(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """The resources of Bundles or single resources (`.json`) and NDJSON files
    (`.ndjson`), files or directories (recursively, in name order).

    Raises FhirError (INVALID) naming the file and line of anything that is not JSON."""
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson")) \
            if path.is_dir() else [path]
        for file in files:
            yield from _read(file)


def _read(file: Path) -> Iterator[dict[str, Any]]:
    lines = file.read_bytes().splitlines() if file.suffix == ".ndjson" else [file.read_bytes()]
    yield from _documents(lines, str(file))


def _documents(lines: list[bytes], where: str) -> Iterator[dict[str, Any]]:
    """The resources of JSON documents, one a line (blank lines skipped); INVALID naming
    `where` and the line of one that is not a JSON object."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise fail(Kind.INVALID, "structure", f"{where} line {number}: not JSON ({exc})") from exc
        if not isinstance(document, dict):
            raise fail(Kind.INVALID, "structure", f"{where} line {number}: not a FHIR resource")
        yield from resources_of(document)


def resources_of(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The resources of a Bundle's entries (searchset, collection, transaction...), or the
    document itself."""
    if document.get("resourceType") != "Bundle":
        yield document
        return
    for entry in document.get("entry") or ():
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            if entry["resource"].get("resourceType") != "OperationOutcome":
                yield entry["resource"]
