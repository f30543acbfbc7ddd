"""The terminology operations as interactions (FHIR R4 terminology-service.html): `$lookup`,
`$validate-code` (CodeSystem and ValueSet), `$expand`, `$translate`, at type level and, but for
$lookup, on an instance.

Access: the caller needs read access to the operation's type (a SMART scope such as
`user/ValueSet.r`; these types hold no patient data, so confined callers reach them too).
Audit: the request's AuditEvent records the operation (audit/events.py); a ValueSet, CodeSystem
or ConceptMap read from the store (one a client created) is noted on its trail as any read.

The definitions come from the catalogue indexed at start (terminology_service); `[Type]/[id]`
names one of them by id, else a resource of the store. The work is terminology_service's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ..model.errors import Kind, fail
from ..terminology_service import (CODE_SYSTEM_VALIDATE, EXPAND, LOOKUP, TRANSLATE,
                                   VALUE_SET_VALIDATE, Catalogue, CodeSystem, Inputs, Pair,
                                   expand, lookup, translate, validate_in_system,
                                   validate_in_value_set)
from . import crud
from .context import Context
from .guard import decision

# (type, operation) -> (the parameters it takes and their kinds, whether it has an instance level)
SIGNATURES: dict[tuple[str, str], tuple[dict[str, str], bool]] = {
    ("CodeSystem", "lookup"): (LOOKUP, False),
    ("CodeSystem", "validate-code"): (CODE_SYSTEM_VALIDATE, True),
    ("ValueSet", "expand"): (EXPAND, True),
    ("ValueSet", "validate-code"): (VALUE_SET_VALIDATE, True),
    ("ConceptMap", "translate"): (TRANSLATE, True),
}
_REPEATABLE = ("property",)


async def run(ctx: Context, resource_type: str, operation: str, pairs: list[Pair],
              id: str | None = None) -> dict[str, Any]:
    """Run `[resource_type]/[id]/$operation` with the parameters `pairs` (from the query
    string or a Parameters body); the Parameters (or ValueSet) it answers."""
    allowed, has_instance = SIGNATURES[(resource_type, operation)]
    decision(ctx, "operation", resource_type)
    if id is not None and not has_instance:
        raise fail(Kind.INVALID, "not-supported", f"${operation} is invoked on the "
                   f"{resource_type} type ({resource_type}/${operation}), not on an instance.")
    catalogue = _catalogue(ctx)
    inputs = Inputs(pairs, allowed, _REPEATABLE)
    if (resource_type, operation) == ("CodeSystem", "lookup"):
        return lookup(catalogue, inputs)
    if resource_type == "CodeSystem":
        # By url the system may be one not held (LOINC): validate_in_system says so in its result.
        target = await _target(ctx, catalogue, "CodeSystem", inputs, id, by_url=False)
        system = _code_system(catalogue, target) if target is not None else None
        return validate_in_system(catalogue, inputs, system)
    if resource_type == "ConceptMap":
        concept_map = await _target(ctx, catalogue, "ConceptMap", inputs, id)
        return translate(catalogue, inputs, concept_map)
    value_set = await _target(ctx, catalogue, "ValueSet", inputs, id)
    if value_set is None:
        raise fail(Kind.INVALID, "required", "Name the ValueSet: url, an id in the path, or a "
                   "valueSet in the body.", expression="url")
    work: Callable[[Catalogue, dict[str, Any], Inputs], dict[str, Any]] = (
        expand if operation == "expand" else validate_in_value_set)
    return work(catalogue, value_set, inputs)


def _catalogue(ctx: Context) -> Catalogue:
    if ctx.terminology is None:
        raise fail(Kind.NOT_SUPPORTED, "not-supported", "This server holds no terminology.")
    return ctx.terminology


async def _target(ctx: Context, catalogue: Catalogue, kind: str, inputs: Inputs, id: str | None,
                  *, by_url: bool = True) -> dict[str, Any] | None:
    """The definition the operation works on: the instance `id`, the canonical `url` (with
    its version parameter; unless not `by_url`), or a ValueSet sent in the body; None when
    none is named; NOT_FOUND when unknown, INVALID when named twice."""
    inline = inputs.complex("valueSet")
    named = [n for n, given in (("id", id is not None), ("url", inputs.has("url")),
                                ("valueSet", inline is not None)) if given]
    if len(named) > 1:
        raise fail(Kind.INVALID, "invalid", f"Name the {kind} once: {' and '.join(named)} were "
                   "both given.", expression=named[1])
    if id is not None:
        held = catalogue.by_id(kind, id)
        if held is not None:
            return held
        stored = await crud.read(ctx, kind, id)
        assert stored.body is not None  # crud.read answers GONE for a deletion
        resource: dict[str, Any] = orjson.loads(stored.body)
        return resource
    if inline is not None:
        if inline.get("resourceType") != "ValueSet":
            raise fail(Kind.INVALID, "invalid", "Parameter valueSet holds a ValueSet.",
                       expression="valueSet")
        return inline
    url = inputs.string("url")
    if url is None or not by_url:
        return None
    version = inputs.string({"ValueSet": "valueSetVersion", "ConceptMap": "conceptMapVersion",
                             "CodeSystem": "version"}[kind])
    found = catalogue.resource(kind, url, version)
    if found is None:
        raise fail(Kind.NOT_FOUND, "not-found", f"{kind} {url}{f' version {version}' if version else ''}"
                   " is not known.", expression="url", details_code="MSG_NO_EXIST")
    return found


def _code_system(catalogue: Catalogue, resource: dict[str, Any]) -> CodeSystem:
    """The indexed CodeSystem of a held resource, or one indexed now for a stored one."""
    if "url" not in resource:
        raise fail(Kind.UNPROCESSABLE, "invalid", "This CodeSystem has no url.")
    held = catalogue.code_system(resource["url"], resource.get("version"))
    return held if held is not None and held.resource is resource else CodeSystem(resource)
