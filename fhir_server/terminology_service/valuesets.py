"""`ValueSet/$expand` and `ValueSet/$validate-code` (FHIR R4 valueset-operation-expand,
valueset-operation-validate-code).

An expansion is flat when paged (`count` or `offset`) or asked flat (`excludeNested`);
otherwise a code whose parent is in the expansion sits in that parent's `contains`
(valueset.html#expansion: "contains nesting"). More than the catalogue's `max_expansion`
codes after `filter` and `activeOnly`: UNPROCESSABLE with code `too-costly`.
"""

from __future__ import annotations

import unicodedata
import uuid
from typing import Any

from .. import clock
from ..model.errors import FhirError, Kind, fail
from .catalogue import Catalogue
from .compose import Member, members
from .lookup import CODED, Verdict, best, check_coding
from .parameters import Inputs

_NAMED = {"url": "text", "valueSet": "resource", "valueSetVersion": "text",
          "displayLanguage": "text"}
EXPAND = {**_NAMED, "filter": "text", "offset": "integer", "count": "integer",
          "activeOnly": "boolean", "excludeNested": "boolean", "includeDesignations": "boolean"}
VALUE_SET_VALIDATE = {**_NAMED, **CODED, "system": "text", "systemVersion": "text", "display": "text",
            "codeableConcept": "valueCodeableConcept", "abstract": "boolean"}
_ECHOED = (("filter", "valueString"), ("offset", "valueInteger"), ("count", "valueInteger"),
           ("activeOnly", "valueBoolean"), ("excludeNested", "valueBoolean"),
           ("includeDesignations", "valueBoolean"), ("displayLanguage", "valueCode"))


def membership(catalogue: Catalogue, value_set: dict[str, Any]) -> dict[tuple[str, str], Member]:
    """The codes of a value set by (system, code); computed once for those the catalogue holds."""
    key = (str(value_set.get("url")), value_set.get("version"))
    held = catalogue.resource("ValueSet", *key) is value_set
    found = catalogue.expansions.get(key) if held else None
    if found is None:
        found = {m.key: m for m in members(catalogue, value_set)}
        if held:
            catalogue.expansions[key] = found
    return found


def expand(catalogue: Catalogue, value_set: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    """The ValueSet with its `expansion`."""
    language = inputs.string("displayLanguage")
    text = inputs.string("filter")
    codes = list(membership(catalogue, value_set).values())
    if inputs.boolean("activeOnly"):
        codes = [m for m in codes if not m.inactive]
    if text is not None:
        codes = [m for m in codes if _matches(m, _folded(text), language)]
    if len(codes) > catalogue.max_expansion:
        raise fail(Kind.UNPROCESSABLE, "too-costly", f"The expansion has {len(codes)} codes, "
                   f"more than the {catalogue.max_expansion} this server computes: narrow it "
                   "with filter.")
    offset, count = inputs.integer("offset"), inputs.integer("count")
    designations = inputs.boolean("includeDesignations") is True
    expansion: dict[str, Any] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}", "timestamp": clock.instant(), "total": len(codes)}
    if offset is not None or count is not None:
        start = offset or 0
        page = codes[start:start + count if count is not None else None]
        expansion["offset"] = start
        contains = [_item(m, language, designations) for m in page]
    elif inputs.boolean("excludeNested"):
        contains = [_item(m, language, designations) for m in codes]
    else:
        contains = _nested(codes, language, designations)
    echoed = [{"name": name, key: value} for name, key in _ECHOED
              for value in [inputs.value(name)] if value is not None]
    if echoed:
        expansion["parameter"] = echoed
    if contains:
        expansion["contains"] = contains
    head: dict[str, Any] = {k: value_set[k] for k in ("resourceType", "id", "url", "version", "name", "title",
                                      "status") if k in value_set}
    return {**head, "expansion": expansion}


def _folded(text: str) -> str:
    """Lower case without accents: `pancreas` finds `Pancréas`."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _matches(member: Member, folded: str, language: str | None) -> bool:
    """Whether the text filter is in the code, the display or a designation."""
    texts = [member.code, member.display_in(language) or ""]
    if member.concept is not None:
        texts += [str(d.get("value", "")) for d in member.concept.designations]
    return any(folded in _folded(t) for t in texts)


def _item(member: Member, language: str | None, designations: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"system": member.system}
    if member.version is not None:
        item["version"] = member.version
    if member.abstract:
        item["abstract"] = True
    if member.inactive:
        item["inactive"] = True
    item["code"] = member.code
    display = member.display_in(language)
    if display is not None:
        item["display"] = display
    if designations and member.concept is not None and member.concept.designations:
        item["designation"] = list(member.concept.designations)
    return item


def _nested(codes: list[Member], language: str | None, designations: bool) -> list[dict[str, Any]]:
    """The expansion as a tree: each code under its first parent that is in the expansion."""
    items = {m.key: _item(m, language, designations) for m in codes}
    top = []
    for member in codes:
        parents = member.concept.parents if member.concept is not None else []
        parent = next((items[(member.system, p)] for p in parents if (member.system, p) in items),
                      None)
        if parent is None:
            top.append(items[member.key])
        else:
            parent.setdefault("contains", []).append(items[member.key])
    return top


def validate_in_value_set(catalogue: Catalogue, value_set: dict[str, Any],
                          inputs: Inputs) -> dict[str, Any]:
    """Whether a code (coding, CodeableConcept) is in the value set: result, message, display."""
    abstract_ok = inputs.boolean("abstract") is True
    language = inputs.string("displayLanguage")
    return best([check_in_value_set(catalogue, value_set, coding, abstract_ok=abstract_ok,
                                    language=language)
                 for coding in inputs.codings()]).as_parameters()


def check_in_value_set(catalogue: Catalogue, value_set: dict[str, Any], coding: dict[str, Any],
                       *, abstract_ok: bool = False, language: str | None = None) -> Verdict:
    """Whether one coding is valid and in `value_set` (a binding's check). A value set the
    server cannot compute (it draws on a system not held) validates nothing: `checked` false."""
    try:
        codes = membership(catalogue, value_set)
    except FhirError as exc:
        return Verdict(False, f"Unable to check: {exc.issues[0].diagnostics}", checked=False)
    verdict, system, concept = check_coding(catalogue, coding, abstract_ok=abstract_ok,
                                            language=language)
    if system is None or concept is None or (system.url, concept.code) in codes:
        return verdict
    name = value_set.get("url") or f"ValueSet/{value_set.get('id')}"
    inactive = " (it is inactive)" if concept.inactive else ""
    return Verdict(False, f"Code {concept.code!r} of {system.url} is not in value set "
                   f"{name}{inactive}.", verdict.display)
