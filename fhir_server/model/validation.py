"""Validation of FHIR R4 (4.0.1) resources, behind one function: `validate`.

Two layers; docs/validation.md has the design, the measurements and what is not checked.

1. The official R4 JSON schema (json.html#schema), with the corrections in `_correct` and the
   R4 rules the published schema leaves out (`schema_rules`: required elements at every depth,
   one value per choice element, real calendar dates, modifierExtension only where R4 defines
   one) applied in memory, compiled per resource type by jsonschema_rs on first use.
2. Optionally, the fhir.resources R4B (4.3.0) pydantic models, only for the R4 types whose
   element structure R4B shares (`data/r4b-agreement.json`, recomputed by
   tests/model/test_types.py). Since layer 1 states their rules, they find nothing more on
   any resource tested (tests/model/test_rules.py); they stay as a second opinion.

On a schema-valid resource, the French identifier rules (`french_ids`) and the profiles it
claims or the caller asks for (`profiles`) run too; their warnings do not refuse a write.

Resources inside a resource (contained, Bundle.entry.resource, Bundle.entry.response.outcome,
Parameters.parameter.resource) are validated one by one against their own type, so each issue
names its own place. The caller's dict is only read: never changed, never re-serialised.
"""

from __future__ import annotations

import copy
import gzip
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import jsonschema_rs
import orjson
from jsonschema_rs import ValidationErrorKind as Err

from . import french_ids, schema_rules
from .errors import FhirError, Issue, Kind
from .jsonbody import MAX_DEPTH, nesting
from .profiles import profile_issues
from .types import R4B_ONLY_TYPES, RESOURCE_TYPES

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic_core import ErrorDetails

_DATA: Final = Path(__file__).parent / "data"
MAX_ISSUES: Final = 100  # a broken 10,000-entry Bundle must not produce a 10,000-issue outcome
_CLIP: Final = 40  # longest client value quoted back in a diagnostic

# --- Layer 1: the R4 JSON schema -----------------------------------------------------------

_INT32: Final = 2_147_483_647
# The schema types R4's integers as JSON numbers with an XSD pattern, but JSON Schema applies
# `pattern` to strings only: 1.5 passed as an integer and 0 as a positiveInt.
_INTEGER_PATTERNS: Final = {
    r"^-?([0]|([1-9][0-9]*))$": (-_INT32 - 1, _INT32),  # integer
    r"^[1-9][0-9]*$": (1, _INT32),  # positiveInt
    r"^[0]|([1-9][0-9]*)$": (0, _INT32),  # unsignedInt
}
# The patterns are XSD regexes, where \s is space, tab, CR and LF only. jsonschema_rs reads
# them as ECMA regexes, where \s also matches U+00A0 and other Unicode spaces, so a display
# with a no-break space (as in an official example) was rejected. Spelled out in XSD's sense:
_WS, _NON_WS = r"[ \t\n\r]", r"[^ \t\n\r]"
_XSD_PATTERNS: Final = {
    r"^[ \r\n\t\S]+$": r"^[\s\S]+$",  # string, markdown: any text, not empty
    r"^\S*$": f"^{_NON_WS}*$",  # uri, url, canonical
    r"^[^\s]+(\s[^\s]+)*$": f"^{_NON_WS}+({_WS}{_NON_WS}+)*$",  # code
    r"^(\s*([0-9a-zA-Z\+/=]){4}\s*)+$": f"^({_WS}*([0-9a-zA-Z\\+/=]){{4}}{_WS}*)+$",  # base64
}
_STRING_PATTERN: Final = r"^[ \r\n\t\S]+$"  # string and markdown
MAX_STRING_LENGTH: Final = 1024 * 1024
"""datatypes.html#string: "strings SHALL NOT exceed 1MB in size" (later versions say
1,048,576 characters)."""
_NOT_NULLABLE: Final = frozenset({"ResourceList", "xhtml"})


@cache
def _definitions() -> dict[str, Any]:
    """The corrected `definitions` of the shipped R4 schema (parsed once, ~30 ms)."""
    schema = orjson.loads(gzip.decompress((_DATA / "fhir.schema.json.gz").read_bytes()))
    return _correct(schema["definitions"])


def schema_definitions() -> dict[str, Any]:
    """The corrected R4 schema's `definitions`, shared: read them, never change them."""
    return _definitions()


def _correct(defs: dict[str, Any]) -> dict[str, Any]:
    """Fix, in place, where the published R4 schema disagrees with the R4 specification.

    Each fix is listed with its reason in docs/validation.md ("Schema corrections").
    """
    _drop_descriptions(defs)
    complex_types = {name for name, d in defs.items() if "properties" in d}
    primitives = defs.keys() - complex_types - _NOT_NULLABLE
    for name in primitives:
        _correct_primitive(defs[name])
    for name in complex_types:
        # Without "type": "object", `"maritalStatus": "x"` or `"name": [5]` passed.
        # formats.html: an element is never empty (ele-1), so neither is its object.
        defs[name].update(type="object", minProperties=1)
    for name in complex_types:
        _correct_properties(defs[name]["properties"], defs, primitives)
    defs["xhtml"] = {"type": "string"}  # the schema has {}, so a number passed as Narrative.div
    # Resources inside resources are validated one by one against their own type (see
    # `_nested`): a precise issue instead of "not valid under any of 146 schemas", and no
    # oneOf over 146 types per contained resource or Bundle entry.
    defs["ResourceList"] = {}
    schema_rules.add_rules(defs)
    return defs


def _drop_descriptions(node: Any) -> None:
    # Descriptions are 80% of the file; without them the dict is smaller and compiles faster.
    if isinstance(node, dict):
        if isinstance(node.get("description"), str):
            del node["description"]
        for value in node.values():
            _drop_descriptions(value)
    elif isinstance(node, list):
        for value in node:
            _drop_descriptions(value)


def _correct_primitive(node: dict[str, Any]) -> None:
    pattern = node.get("pattern")
    if pattern in _INTEGER_PATTERNS:
        low, high = _INTEGER_PATTERNS[pattern]
        del node["pattern"]
        node.update(type="integer", minimum=low, maximum=high)
    elif pattern in _XSD_PATTERNS:
        if pattern == _STRING_PATTERN:
            node["maxLength"] = MAX_STRING_LENGTH
        node["pattern"] = _XSD_PATTERNS[pattern]
    elif pattern in schema_rules.CALENDAR_PATTERNS:  # "Dates SHALL be valid dates"
        node["pattern"] = schema_rules.CALENDAR_PATTERNS[pattern]
    enum = node.get("enum")
    if enum is not None and "4.0.0" in enum and "4.0.1" not in enum:
        enum.append("4.0.1")  # FHIRVersion codes were generated before the 4.0.1 release


def _correct_properties(props: dict[str, Any], defs: dict[str, Any], primitives: set[str]) -> None:
    for name, prop in list(props.items()):
        is_array = prop.get("type") == "array"
        item = prop["items"] if is_array else prop
        _correct_primitive(item)
        ref = item.get("$ref", "").removeprefix("#/definitions/")
        if is_array:
            prop["minItems"] = 1  # formats.html: an element is never empty (ele-1)
            if ref in primitives or "pattern" in item or "enum" in item or ref == "Element":
                # json.html: a primitive array may hold null where only `_x[i]` has content.
                prop["items"] = _nullable(defs[ref] if ref else item)
        if ref == "canonical" and f"_{name}" not in props:
            # Every primitive may carry `_x` (json.html#primitive); the schema forgot canonical.
            element: dict[str, Any] = {"$ref": "#/definitions/Element"}
            if is_array:
                element = {"type": "array", "minItems": 1, "items": _nullable(defs["Element"])}
            props[f"_{name}"] = element


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    node = copy.deepcopy(node)
    if "type" in node:
        node["type"] = [node["type"], "null"]
    if "enum" in node:
        node["enum"] = [*node["enum"], None]
    return node


def _reachable(defs: dict[str, Any], root: str) -> dict[str, Any]:
    """The definitions `root` refers to, directly or not (compiling fewer is faster)."""
    found: dict[str, Any] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        if name not in found:
            found[name] = defs[name]
            todo.extend(_refs(defs[name]))
    return found


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.removeprefix("#/definitions/")
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


@cache
def _schema(resource_type: str) -> jsonschema_rs.Validator:
    """The compiled schema of one resource type (compiled on first use, then kept)."""
    defs = _reachable(_definitions(), resource_type)
    return jsonschema_rs.Draft6Validator(
        {"$ref": f"#/definitions/{resource_type}", "definitions": defs}
    )


@cache
def _pattern_names() -> dict[str, str]:
    """Primitive type name by (corrected) pattern, to say "invalid date" and not a regex."""
    names: dict[str, str] = {}
    defs = _definitions()
    # Patterns shared by several types get the general name: uri (url, canonical), string.
    for name in ("string", "uri", *sorted(defs)):
        pattern = defs[name].get("pattern")
        if isinstance(pattern, str):
            names.setdefault(pattern, name)
    return names


def _schema_issues(
    errors: Iterable[jsonschema_rs.ValidationError], prefix: str
) -> Iterator[Issue]:
    """Turn jsonschema_rs errors into issues; built from their parts, never their messages,
    which quote the whole offending value."""
    conflicts: set[str] = set()
    for error in errors:
        found = _choice_conflicts(error, prefix)
        if found is None:
            yield from _error_issues(error, prefix)
        for where, issue in found or ():
            if where not in conflicts:  # each name of a conflict forbids the others: report once
                conflicts.add(where)
                yield issue


def _choice_conflicts(
    error: jsonschema_rs.ValidationError, prefix: str
) -> list[tuple[str, Issue]] | None:
    """(expression, issue) for each choice element with two values, when `error` is the
    `anyOf` that `schema_rules` adds to a definition with choice elements; else None."""
    keywords = list(error.schema_path)
    if not isinstance(error.kind, Err.AnyOf) or keywords[::2] != ["definitions", "anyOf"]:
        return None
    groups = schema_rules.rules()["choices"][keywords[1]]
    found = []
    for inner in error.kind.context[1]:  # [..., "anyOf", 1, "dependencies", name, ...]
        base = schema_rules.choice_bases()[str(list(inner.schema_path)[5])]
        names = sorted(schema_rules.choice_names(base, groups[base], _dict(inner.instance)))
        path = f"{_fhirpath(prefix, inner.instance_path)}.{base}"
        message = f"Only one {base}[x] is allowed, found {', '.join(names)}"
        found.append((path, _issue("structure", message, path)))
    return found


def _error_issues(error: jsonschema_rs.ValidationError, prefix: str) -> Iterator[Issue]:
    steps = list(error.instance_path)
    while steps and isinstance(steps[-1], int):
        steps.pop()
    # FHIRPath names `_birthDate` birthDate; say which JSON property is meant.
    at_x = bool(steps) and str(steps[-1]).startswith("_")
    for issue in _keyword_issues(error, _fhirpath(prefix, error.instance_path)):
        if at_x and not issue.diagnostics.startswith("Unknown element"):
            issue = replace(issue, diagnostics=f"{issue.diagnostics} (in '{steps[-1]}')")
        yield issue


def _keyword_issues(error: jsonschema_rs.ValidationError, path: str) -> Iterator[Issue]:
    kind, value = error.kind, error.instance
    if isinstance(kind, Err.AdditionalProperties):
        for name in kind.unexpected:
            yield _unknown_element(f"{path}.{name}", name)
    elif isinstance(kind, Err.Required):
        yield _issue(
            "required", f"Missing required element '{kind.property}'", f"{path}.{kind.property}"
        )
    elif isinstance(kind, Err.Type):
        expected = " or ".join(t for t in kind.types if t != "null")
        yield _issue("structure", f"Expected {_a(expected)}, found {_a(_json_type(value))}", path)
    elif isinstance(kind, (Err.MinItems, Err.MinProperties)):
        what = "array" if isinstance(kind, Err.MinItems) else "object"
        yield _issue("structure", f"Empty {what} is not allowed: leave the element out", path)
    elif isinstance(kind, Err.Pattern) and value == "":
        yield _issue("value", "Empty string is not allowed: leave the element out", path)
    elif isinstance(kind, Err.Pattern):
        type_name = _pattern_names().get(kind.pattern, "primitive")
        day = schema_rules.impossible_day(kind.pattern, value)
        if day is not None:
            yield _issue("value", f"Invalid {type_name} value {_show(value)}: {day}", path)
        else:
            details = "MSG_DATE_FORMAT" if type_name in ("date", "dateTime", "instant") else None
            yield _issue("value", f"Invalid {type_name} value {_show(value)}", path, details)
    elif isinstance(kind, Err.AnyOf) and (names := _required_names(kind.context)):
        yield _missing(path, names)
    elif isinstance(kind, Err.Enum):
        yield _issue("value", f"Invalid code {_show(value)}: {_choices(kind.options)}", path)
    elif isinstance(kind, Err.Constant):
        yield _issue("value", f"Expected {_show(kind.expected_value)}, found {_show(value)}", path)
    elif isinstance(kind, Err.MaxLength):
        yield _issue("too-long", f"The string has {len(value):,} characters; the limit is "
                     f"{kind.limit:,} (1 MB)", path)
    elif isinstance(kind, (Err.Minimum, Err.Maximum)):
        bound = "at least" if isinstance(kind, Err.Minimum) else "at most"
        yield _issue("value", f"Value {_show(value)} must be {bound} {kind.limit}", path)
    else:
        yield _issue("invalid", f"Invalid content (JSON schema keyword '{kind.name}')", path)


def _required_names(context: Sequence[Sequence[jsonschema_rs.ValidationError]]) -> list[str]:
    """The names of a required element (`status`, `_status`) from an `anyOf` of `required`
    (added by `schema_rules`) that none of them met; [] for any other `anyOf`."""
    names = []
    for branch in context:
        if len(branch) != 1 or not isinstance(branch[0].kind, Err.Required):
            return []
        names.append(str(branch[0].kind.property))
    return names


def _missing(path: str, names: Sequence[str]) -> Issue:
    """A required primitive (`x` or `_x`) or choice element (any of its names) is absent."""
    element = names[0].lstrip("_")
    if any(n.lstrip("_") != element for n in names):
        element = schema_rules.choice_bases()[element]
        return _issue("required", f"Missing required element '{element}[x]'", f"{path}.{element}")
    return _issue("required", f"Missing required element '{element}'", f"{path}.{element}")


# --- Layer 2: fhir.resources R4B models -----------------------------------------------------


@cache
def _agreeing_types() -> frozenset[str]:
    """R4 types whose element structure R4B shares (see tests/model/test_types.py)."""
    return frozenset(orjson.loads((_DATA / "r4b-agreement.json").read_bytes())["types"])


@cache
def _model(resource_type: str) -> type[BaseModel]:
    # Imported here: loading fhir.resources costs ~1 s, paid only if models are used.
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


def _model_issues(resource: dict[str, Any], prefix: str) -> Iterator[Issue]:
    from pydantic import ValidationError

    if resource["resourceType"] in _agreeing_types():
        body = _without_nested(resource)
        try:
            _model(resource["resourceType"]).model_validate(body)
        except ValidationError as error:
            for detail in error.errors(include_url=False, include_context=False):
                issue = _model_issue(detail, prefix, body)
                if issue is not None:
                    yield issue
        except Exception:  # noqa: BLE001 - a crash inside fhir.resources is no finding
            # fhir_core 1.1 raises AttributeError on valid R4 such as a required primitive
            # array given by its extensions only (`"_format": [{...}]`). The schema, which
            # passed, states every rule the models check (tests/model/test_rules.py).
            return


def _model_issue(detail: ErrorDetails, prefix: str, body: dict[str, Any]) -> Issue | None:
    """Turn one pydantic error into an issue, or None when R4 allows what R4B does not."""
    loc, kind = detail["loc"], detail["type"]
    text = detail["msg"].removeprefix("Value error, ")
    path = _fhirpath(prefix, loc)
    if kind == "extra_forbidden":
        name = str(loc[-1])
        # R4B has no `_x` for Extension.value[x] and Extension.url; R4 allows them, and the
        # schema, which already passed, is the authority on which elements exist.
        return None if name.startswith("_") else _unknown_element(path, name)
    if kind == "uuid_version":
        return None  # R4B wants version 4 UUIDs; R4 takes any (datatypes.html#uuid)
    if kind in ("missing", "model_field_validation.missing"):
        return _issue("required", f"Missing required element '{loc[-1]}'", path)
    if text.startswith(("Any of one field value", "Expect any of field value")):
        names = re.findall(r"'(\w+)'", text)
        base = _choice_base(names)
        if text.startswith("Expect"):
            return _issue("required", f"Missing required element '{base}[x]'", f"{path}.{base}")
        node = _at(body, loc)
        found = ", ".join(n for n in names if isinstance(node, dict) and n in node)
        return _issue(
            "structure", f"Only one {base}[x] is allowed, found {found}", f"{path}.{base}"
        )
    return _issue("value", _clip(text, 160), path)


def _choice_base(names: Sequence[str]) -> str:
    """`value` for ["valueString", "valueQuantity"]: the prefix before each type name."""
    base = names[0]
    for name in names[1:]:
        while not name.startswith(base):
            base = base[:-1]
    while base and not all(len(n) > len(base) and n[len(base)].isupper() for n in names):
        base = base[:-1]
    return base


def _at(node: Any, loc: Sequence[str | int]) -> Any:
    for step in loc:
        node = node[step]
    return node


# --- Resources inside resources -----------------------------------------------------------


def _nested(resource: dict[str, Any]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Each resource directly inside `resource`, with its JSON path relative to it.

    These are all the places the R4 schema types as ResourceList (tests/model/test_validation.py
    checks that no other exists). Reads defensively: it runs before the schema has passed.
    """
    for i, inner in enumerate(_list(resource.get("contained"))):
        yield ("contained", i), inner
    if resource.get("resourceType") == "Bundle":
        for i, entry in enumerate(_list(resource.get("entry"))):
            if isinstance(entry, dict):
                if "resource" in entry:
                    yield ("entry", i, "resource"), entry["resource"]
                response = entry.get("response")
                if isinstance(response, dict) and "outcome" in response:
                    yield ("entry", i, "response", "outcome"), response["outcome"]
    elif resource.get("resourceType") == "Parameters":
        yield from _parameter_resources(resource.get("parameter"), ("parameter",))


def _each_resource(
    resource: dict[str, Any], prefix: str | None = None
) -> Iterator[tuple[dict[str, Any], str]]:
    """`resource` and every resource inside it, each with its FHIRPath place (schema-valid
    input only)."""
    prefix = prefix or resource["resourceType"]
    yield resource, prefix
    for steps, inner in _nested(resource):
        yield from _each_resource(inner, _fhirpath(prefix, steps))


def _parameter_resources(
    parameters: Any, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    for i, parameter in enumerate(_list(parameters)):
        if isinstance(parameter, dict):
            if "resource" in parameter:
                yield (*path, i, "resource"), parameter["resource"]
            yield from _parameter_resources(parameter.get("part"), (*path, i, "part"))


def _without_nested(resource: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of `resource` without the resources inside it (they are validated
    separately, possibly by the schema only); `resource` itself is untouched."""
    body = {k: v for k, v in resource.items() if k != "contained"}
    if body["resourceType"] == "Bundle" and "entry" in body:
        body["entry"] = [_without_entry_resources(entry) for entry in body["entry"]]
    elif body["resourceType"] == "Parameters" and "parameter" in body:
        body["parameter"] = [_without_parameter_resources(p) for p in body["parameter"]]
    return body


def _without_entry_resources(entry: dict[str, Any]) -> dict[str, Any]:
    entry = {k: v for k, v in entry.items() if k != "resource"}
    if "outcome" in entry.get("response", {}):
        entry["response"] = {k: v for k, v in entry["response"].items() if k != "outcome"}
    return entry


def _without_parameter_resources(parameter: dict[str, Any]) -> dict[str, Any]:
    parameter = {k: v for k, v in parameter.items() if k != "resource"}
    if "part" in parameter:
        parameter["part"] = [_without_parameter_resources(p) for p in parameter["part"]]
    return parameter


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# --- Issues ---------------------------------------------------------------------------------


def _issue(
    code: str, diagnostics: str, expression: str | None, details: str | None = None
) -> Issue:
    where = (expression,) if expression else ()
    return Issue(code=code, diagnostics=diagnostics, expression=where, details_code=details)


def _unknown_element(expression: str, name: str) -> Issue:
    return _issue(
        "structure", f"Unknown element '{_clip(name, 64)}'", expression, "MSG_UNKNOWN_CONTENT"
    )


def _type_issue(resource: Any, where: str | None) -> Issue | None:
    """The issue with `resource` (at `where`; None at the top) as an R4 resource, if any."""
    at_type = f"{where}.resourceType" if where else "resourceType"
    if not isinstance(resource, dict):
        found = _a(_json_type(resource))
        return _issue("structure", f"Expected a resource (a JSON object), found {found}", where)
    name = resource.get("resourceType")
    if name is None:
        return _issue("required", "Missing required element 'resourceType'", at_type)
    if not isinstance(name, str):
        return _issue("structure", f"Expected a string, found {_a(_json_type(name))}", at_type)
    if name in R4B_ONLY_TYPES:
        message = f"Resource type '{name}' is from FHIR R4B/R5; this server implements R4 (4.0.1)"
        return _issue("not-supported", message, at_type, "MSG_UNKNOWN_TYPE")
    if name not in RESOURCE_TYPES:
        message = f"Unknown resource type {_show(name)} (this server implements FHIR R4 4.0.1)"
        return _issue("not-supported", message, at_type, "MSG_UNKNOWN_TYPE")
    return None


def _fhirpath(prefix: str, steps: Sequence[str | int]) -> str:
    """`Patient.name[0].given` from "Patient" and ["name", 0, "given"].

    `_x` (a primitive's id and extensions, json.html#primitive) is named as FHIRPath sees
    it, `x`: `Patient._birthDate.extension[0]` is `Patient.birthDate.extension[0]`.
    """
    parts = [prefix]
    for step in steps:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        else:
            parts.append("." + (step[1:] if step.startswith("_") and len(step) > 1 else step))
    return "".join(parts)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _a(noun: str) -> str:
    if noun == "null":
        return noun
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _show(value: Any) -> str:
    """A short, JSON-looking rendering of a client value: quoted and clipped, or its type."""
    if isinstance(value, str):
        return orjson.dumps(_clip(value, _CLIP)).decode()
    if value is None or isinstance(value, (bool, int, float)):
        return orjson.dumps(value).decode()
    return _a(_json_type(value))


def _choices(options: Sequence[Any]) -> str:
    codes = [str(o) for o in options if o is not None]
    if len(codes) <= 8:
        return "expected one of " + ", ".join(codes)
    return f"expected one of {len(codes)} codes, such as " + ", ".join(codes[:4])


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- The validator ----------------------------------------------------------------------------


class Validator:
    """Validates resources against FHIR R4; `use_models` adds the fhir.resources R4B layer.

    Instances share the compiled schemas (per process), so creating one is free.
    """

    def __init__(self, *, use_models: bool = True) -> None:
        self.use_models = use_models

    def issues(self, resource: Any, depth: int | None = None) -> list[Issue]:
        """Every way `resource` breaks FHIR R4 (empty when it is valid), at most
        MAX_ISSUES + 1. `depth`: its levels of objects and arrays, when its parse counted
        them already (`jsonbody.parse_counted`), so that they are not counted again."""
        if (nesting(resource, MAX_DEPTH) if depth is None else depth) > MAX_DEPTH:
            # Checked first: the walks below, and orjson when the resource is stored, have
            # depth limits of their own.
            return [_issue("too-costly", f"The resource nests objects and arrays more than "
                           f"{MAX_DEPTH} levels deep", resource["resourceType"])]
        found = list(self._schema_pass(resource, None))
        if not found and self.use_models:
            # Only on schema-valid input: the model then sees R4 structure only, so its errors
            # are rules the schema cannot state, not repeats of the schema's.
            found = list(self._model_pass(resource, resource["resourceType"]))
        return _capped(found)

    def outcome(self, resource: Any, profiles: Sequence[str] = (), depth: int | None = None) -> list[Issue]:
        """Every issue a write reports and `$validate` lists: R4 (`issues`), then, on a valid
        R4 resource, the French identifier rules and the profiles it claims in `meta.profile`
        and `profiles` (held ones: `model.profiles.find`), warnings included. Raise FhirError
        INVALID when `resourceType` is not an R4 type (nothing else can be checked). `depth`:
        as `issues` takes it."""
        problem = _type_issue(resource, None)
        if problem is not None:
            raise FhirError(Kind.INVALID, (problem,))
        found = self.issues(resource, depth)
        if found:
            return found
        # The French identifier rules and the profiles read R4 structure: valid R4 only.
        for inner, at in _each_resource(resource):
            found.extend(french_ids.issues(inner, at))
            found.extend(profile_issues(inner, at, profiles if inner is resource else ()))
        return _capped(list(dict.fromkeys(found)))  # a profile may repeat a rule that ran

    def validate(self, resource: dict[str, Any]) -> None:
        """Raise FhirError listing every issue of `outcome` when one is an error: INVALID
        when `resourceType` is not an R4 type, otherwise UNPROCESSABLE. Warnings alone pass."""
        found = self.outcome(resource)
        if any(i.severity in ("error", "fatal") for i in found):
            raise FhirError(Kind.UNPROCESSABLE, tuple(found))

    def _schema_pass(self, resource: Any, prefix: str | None) -> Iterator[Issue]:
        problem = _type_issue(resource, prefix)
        if problem is not None:
            yield problem
            return
        prefix = prefix or resource["resourceType"]
        yield from _schema_issues(_schema(resource["resourceType"]).iter_errors(resource), prefix)
        for steps, inner in _nested(resource):
            yield from self._schema_pass(inner, _fhirpath(prefix, steps))

    def _model_pass(self, resource: dict[str, Any], prefix: str) -> Iterator[Issue]:
        for inner, at in _each_resource(resource, prefix):
            yield from _model_issues(inner, at)


def _capped(found: list[Issue]) -> list[Issue]:
    if len(found) > MAX_ISSUES:
        more = len(found) - MAX_ISSUES
        found = found[:MAX_ISSUES]
        found.append(Issue("informational", f"{more} more issues not listed", "information"))
    return found


_default: Final = Validator()


def validate(resource: dict[str, Any]) -> None:
    """Validate with the default `Validator` (schema and models); see `Validator.validate`."""
    _default.validate(resource)
