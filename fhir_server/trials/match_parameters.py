"""The parameters of `POST [base]/ResearchStudy/$match` (profiles/OperationDefinition-
ResearchStudy-match.json), read and checked: every mistake is an INVALID (400) or
UNPROCESSABLE (422) naming the parameter, before anything is read or evaluated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model.errors import Kind, fail
from .gazetteer import Point, parse_location

NAMES = ("patient", "bundle", "location", "radius", "phase", "recruiting-only", "count")
SINGLE = ("patient", "bundle", "location", "radius", "recruiting-only", "count")
# R4 research-study-phase codes, and the one ECLAIRE adds (eclaire-study-phase-code-system).
# Entries of a `bundle` profile, at most: a patient's summary, not a whole record (a stored
# patient is matched with `patient`). Validating a profile costs about 0.1 ms of CPU an entry,
# and anyone may send one without a token: 16 MB of entries would hold a worker for seconds.
MAX_PROFILE_ENTRIES = 1000
PHASES = frozenset({"n-a", "early-phase-1", "phase-1", "phase-1-phase-2", "phase-2", "phase-2-phase-3",
                    "phase-3", "phase-4", "phase-3-phase-4"})


@dataclass(frozen=True, slots=True)
class MatchRequest:
    patient: str | None  # a Patient id
    bundle: dict[str, Any] | None  # an anonymous profile (collection Bundle), never stored
    origin: Point | None
    radius: float | None  # km
    phases: frozenset[str]
    recruiting_only: bool
    count: int | None


def _where(name: str) -> str:
    return f"Parameters.parameter.where(name='{name}')"


def invalid(name: str, message: str) -> Exception:
    return fail(Kind.INVALID, "invalid", f"Parameter '{name}': {message}", expression=_where(name))


def unprocessable(name: str, message: str) -> Exception:
    return fail(Kind.UNPROCESSABLE, "business-rule", f"Parameter '{name}': {message}",
                expression=_where(name))


def _value(parameter: dict[str, Any], name: str, *kinds: str) -> Any:
    for kind in kinds:
        if kind in parameter:
            return parameter[kind]
    raise invalid(name, f"takes {' or '.join(kinds)}")


def _patient(parameter: dict[str, Any]) -> str:
    reference = (_value(parameter, "patient", "valueReference") or {}).get("reference")
    kind, _, id = reference.partition("/") if isinstance(reference, str) else ("", "", "")
    if kind != "Patient" or not id or "/" in id:
        raise invalid("patient", "a valueReference of the form Patient/<id>")
    return id


def _radius(parameter: dict[str, Any]) -> float:
    value = _value(parameter, "radius", "valueDecimal", "valueInteger", "valueQuantity")
    if isinstance(value, dict):
        if (value.get("code") or value.get("unit")) not in ("km", None):
            raise invalid("radius", "a distance in km")
        value = value.get("value")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise invalid("radius", "a distance in km greater than 0")
    return float(value)


def _phases(parameters: list[dict[str, Any]]) -> frozenset[str]:
    found = set()
    for parameter in parameters:
        value = _value(parameter, "phase", "valueCode", "valueString", "valueCoding")
        code = value.get("code") if isinstance(value, dict) else value
        if not isinstance(code, str) or not code.strip():
            raise invalid("phase", "a phase code (R4 research-study-phase or ECLAIRE)")
        found.update(c.strip() for c in code.split(",") if c.strip())
    unknown = sorted(found - PHASES)
    if unknown:  # it would match nothing: say so rather than answer an empty list
        raise invalid("phase", f"unknown phase code(s) {', '.join(unknown)}; known: {', '.join(sorted(PHASES))}")
    return frozenset(found)


def check_size(body: Any) -> None:
    """UNPROCESSABLE (too-costly) naming `bundle` when its profile holds more than
    MAX_PROFILE_ENTRIES entries; INVALID naming `count` when it is not a positive integer a
    FHIR integer holds (which the body's validation would refuse naming only its path).
    Called before the body is validated, which costs as much."""
    parameters = body.get("parameter") if isinstance(body, dict) else None
    for parameter in parameters if isinstance(parameters, list) else ():
        if isinstance(parameter, dict) and parameter.get("name") == "count":
            count = parameter.get("valuePositiveInt", parameter.get("valueInteger"))
            if isinstance(count, int) and not isinstance(count, bool) and not 0 < count < 2**31:
                raise invalid("count", "a positive integer (at most 2,147,483,647)")
        resource = parameter.get("resource") if isinstance(parameter, dict) else None
        entries = resource.get("entry") if isinstance(resource, dict) else None
        if isinstance(entries, list) and parameter.get("name") == "bundle" \
                and len(entries) > MAX_PROFILE_ENTRIES:
            raise fail(Kind.UNPROCESSABLE, "too-costly", f"Parameter 'bundle': {len(entries)} "
                       f"entries; an anonymous profile holds at most {MAX_PROFILE_ENTRIES} (match "
                       "a stored record with 'patient')", expression=_where("bundle"))


def read(body: dict[str, Any]) -> MatchRequest:
    """The request of a Parameters body (already checked as a Parameters resource)."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for parameter in body.get("parameter", []):
        name = parameter.get("name")
        if name not in NAMES:
            raise invalid(str(name), f"unknown; $match takes {', '.join(NAMES)}")
        by_name.setdefault(name, []).append(parameter)
    for name in SINGLE:
        if len(by_name.get(name, [])) > 1:
            raise invalid(name, "given more than once")
    if ("patient" in by_name) == ("bundle" in by_name):
        raise invalid("patient" if "patient" in by_name else "bundle",
                      "give either 'patient' (a stored patient) or 'bundle' (an anonymous "
                      "profile), not both, not neither")
    origin = None
    if "location" in by_name:
        text = _value(by_name["location"][0], "location", "valueString")
        try:
            origin = parse_location(str(text))
        except ValueError as exc:
            raise invalid("location", str(exc)) from None
    recruiting_only = _value(by_name["recruiting-only"][0], "recruiting-only", "valueBoolean") \
        if "recruiting-only" in by_name else True
    if not isinstance(recruiting_only, bool):
        raise invalid("recruiting-only", "a valueBoolean")
    count = None
    if "count" in by_name:
        count = _value(by_name["count"][0], "count", "valuePositiveInt", "valueInteger")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise invalid("count", "a positive integer")
    bundle = by_name["bundle"][0].get("resource") if "bundle" in by_name else None
    if "bundle" in by_name and not isinstance(bundle, dict):
        raise invalid("bundle", "a Bundle resource (parameter.resource)")
    return MatchRequest(
        patient=_patient(by_name["patient"][0]) if "patient" in by_name else None,
        bundle=bundle, origin=origin,
        radius=_radius(by_name["radius"][0]) if "radius" in by_name else None,
        phases=_phases(by_name.get("phase", [])), recruiting_only=recruiting_only, count=count)
