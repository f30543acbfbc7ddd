"""The FHIRPath engine fallback for expressions the compiler does not handle.

fhirpathpy evaluates the full language but returns bare JSON values, so the FHIR type each
value has is read back from its shape (`shape_type`), restricted to the types the parameter's
type can index. This is slower and less exact than the compiled path; `Extractor.fallbacks`
lists the parameters that use it (the R4 set: see tests/search/test_extract.py).
fhirpathpy has no `resolve()`: it is supplied here, resolving a literal reference to a stub
`{"resourceType": T}` so that `where(resolve() is T)` works.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from .references import reference_type

log = logging.getLogger(__name__)


def _resolve(inputs: list[Any]) -> list[Any]:
    from fhirpathpy.engine.nodes import ResourceNode

    out = []
    for item in inputs:
        if isinstance(item, dict) and (t := reference_type(item)):
            # Wrapped so that fhirpathpy's `is` reads the type from `resourceType`.
            out.append(ResourceNode.create_node({"resourceType": t}))  # type: ignore[no-untyped-call]
    return out


def engine(expression: str) -> Callable[[dict[str, Any]], list[Any]]:
    """fhirpathpy compiled `expression`, returning JSON values (exceptions propagate)."""
    # Imported on first use: ~35 ms that most processes never need.
    import fhirpathpy
    from fhirpathpy.models import models

    options = {"userInvocationTable": {"resolve": {"fn": _resolve, "arity": {0: []}}}}
    compiled = fhirpathpy.compile(expression, model=models["r4"], options=options)

    def evaluate(resource: dict[str, Any]) -> list[Any]:
        return list(compiled(resource, {}))

    return evaluate


def shape_type(param_type: str, value: Any) -> str | None:
    """The FHIR type of a JSON `value` as far as a `param_type` parameter cares."""
    if value is True or value is False:
        return "boolean"
    if isinstance(value, (int, float)):
        return "decimal"
    if isinstance(value, str):
        return {"date": "dateTime", "reference": "canonical", "string": "string", "uri": "uri"}.get(
            param_type, "code"
        )
    if not isinstance(value, dict):
        return None
    keys = value.keys()
    if "resourceType" in keys:
        return "Resource"
    if param_type == "token":
        if "coding" in keys or keys == {"text"}:
            return "CodeableConcept"
        if "value" in keys:
            return "ContactPoint" if value.get("system") in _CONTACT_SYSTEMS else "Identifier"
        return "Coding"
    if param_type == "reference":
        return "Reference"
    if param_type == "date":
        return "Period" if keys & {"start", "end"} else "Timing"
    if param_type == "string":
        return "HumanName" if keys & {"family", "given"} else "Address"
    if param_type in ("quantity", "number"):
        return "Range" if keys & {"low", "high"} else "Money" if "currency" in keys else "Quantity"
    return None


_CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


def fallback_runner(
    param_type: str,
    expression: str,
    indexers: Mapping[str, Callable[[str, Any, list[Any]], None]],
) -> Callable[[str, dict[str, Any], list[Any]], None]:
    """A `(code, resource, out)` indexer evaluating `expression` with fhirpathpy."""
    evaluate = engine(expression)

    def run(code: str, resource: dict[str, Any], out: list[Any]) -> None:
        try:
            values = evaluate(resource)
        except Exception:  # the engine failing must not fail the write; the gap is logged
            log.warning("fhirpathpy failed on %s for %s", expression, resource.get("resourceType"))
            return
        for value in values:
            fhir_type = shape_type(param_type, value)
            index = indexers.get(fhir_type) if fhir_type else None
            if index is not None:
                index(code, value, out)

    return run
