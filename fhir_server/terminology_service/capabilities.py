"""What the terminology service can do, as a TerminologyCapabilities resource (FHIR R4
terminologycapabilities.html), the answer to `GET [base]/metadata?mode=terminology`
(http.html#capabilities): each code system held with its versions, the languages of its
displays and the compose filters it takes; the `$expand` parameters; `$validate-code` and
`$translate` as this server answers them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .catalogue import Catalogue
from .valuesets import EXPAND

# valueset.html#compose filters (compose.py): on the hierarchy, and on a property's values.
_HIERARCHY_OPS = ["is-a", "descendent-of", "is-not-a", "generalizes", "=", "in", "not-in", "regex"]
_VALUE_OPS = ["=", "in", "not-in", "regex", "exists"]
_OWN_PROPERTIES = ("display", "parent", "child")  # every concept has them (compose._values)
_EXPANSION_DOCS = {
    "url": "the value set held, by canonical URL",
    "valueSet": "the value set itself (POST)",
    "valueSetVersion": "the version of the value set held",
    "displayLanguage": "fr or en (or fr-FR, en-GB, ...): the displays of our code systems",
    "filter": "text in the code, display or a designation; case and accents ignored",
    "offset": "paging: the first code given (a paged expansion is flat)",
    "count": "paging: how many codes are given",
    "activeOnly": "leave out the inactive codes",
    "excludeNested": "a flat expansion, without the hierarchy",
    "includeDesignations": "each code's designations",
}


def terminology_capabilities(catalogue: Catalogue, base_url: str, *, software: str, version: str,
                             date: str) -> dict[str, Any]:
    """The TerminologyCapabilities of the server at `base_url` (kind `instance`)."""
    return {
        "resourceType": "TerminologyCapabilities",
        "status": "active",
        "date": date,
        "publisher": software,
        "description": "The code systems, value sets and concept maps this FHIR server holds "
                       "(docs/terminology.md). Systems it does not hold (LOINC, SNOMED CT, ...) "
                       "are not checked: a code of one of them is never taken as valid.",
        "kind": "instance",
        "software": {"name": software, "version": version},
        "implementation": {"description": "FHIR R4 terminology operations", "url": base_url},
        "lockedDate": False,
        "codeSystem": list(_code_systems(catalogue)),
        "expansion": {
            "hierarchical": True,
            "paging": True,
            "incomplete": False,  # past the size limit: an error (too-costly), never a part
            "parameter": [{"name": name, "documentation": _EXPANSION_DOCS[name]} for name in EXPAND],
            "textFilter": "Matches a code whose code, display (in displayLanguage) or a "
                          "designation contains the text, ignoring case and accents.",
        },
        "validateCode": {"translations": False},
        "translation": {"needsMap": False},  # without a map, every map held is tried
    }


def _code_systems(catalogue: Catalogue) -> Iterator[dict[str, Any]]:
    """Each code system whose concepts are held (not the `not-present` stubs, not the
    supplements), its default version first as the catalogue chooses it."""
    for url in sorted(catalogue.urls("CodeSystem")):
        held = [r for r in catalogue.resources("CodeSystem", url)
                if r.get("content") not in ("not-present", "supplement")]
        if held:
            yield {"uri": url, "version": [_version(r, n == 0) for n, r in enumerate(held)],
                   "subsumption": False}  # $subsumes is not offered


def _version(resource: dict[str, Any], default: bool) -> dict[str, Any]:
    properties = [str(p["code"]) for p in resource.get("property", []) if "code" in p]
    languages = sorted(_languages(resource))
    return {
        **({"code": resource["version"]} if "version" in resource else {}),
        "isDefault": default,
        "compositional": False,
        **({"language": languages} if languages else {}),
        "filter": [{"code": "concept", "op": _HIERARCHY_OPS},
                   *({"code": code, "op": _VALUE_OPS} for code in [*_OWN_PROPERTIES, *properties])],
        **({"property": properties} if properties else {}),
    }


def _languages(resource: dict[str, Any]) -> set[str]:
    """The languages of the system's displays: its own, and its designations'."""
    found = {resource["language"]} if "language" in resource else set()
    concepts = list(resource.get("concept", []))
    while concepts:
        concept = concepts.pop()
        found.update(d["language"] for d in concept.get("designation", []) if "language" in d)
        concepts.extend(concept.get("concept", []))
    return found
