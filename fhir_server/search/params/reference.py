"""Reference parameters (FHIR R4 search.html#reference).

Indexed: Reference (literal reference and/or Reference.identifier), canonical and uri
(`url|version`), and a whole Resource (`Bundle.entry[0].resource`: its type and id).
Contained references (`#id`) are not indexed: they point inside the resource itself.

Search values: `[id]` (type implied when the parameter has one target type), `[type]/[id]`
(with optional `/_history/[vid]`), an absolute URL (read as relative when it is under this
server's base), a canonical `url|version`, `:[type]` to fix the type, `:identifier` with
`[system]|[value]`.

Matching: a relative search value matches entries with the same id, type (when given) and
version (when given) that came from a relative reference (`url` None); an absolute one matches
entries with the same `url` (and version when given).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..ast import ReferenceIdentifierPredicate, ReferencePredicate
from ..entries import ReferenceEntry
from ..references import parse_canonical, parse_reference

Indexer = Callable[[str, Any, list[Any]], None]


def _str(value: Any) -> str | None:
    return value if value.__class__ is str and value else None


def reference_indexers(base: str | None) -> dict[str, Indexer]:
    """Indexers by FHIR type; `base` is this server's base URL (absolute refs under it are local)."""

    def index_reference(param: str, value: Any, out: list[Any]) -> None:
        if value.__class__ is not dict:
            return
        isys = ivalue = None
        ident = value.get("identifier")
        if ident.__class__ is dict:
            isys, ivalue = _str(ident.get("system")), _str(ident.get("value"))
        text = value.get("reference")
        parsed = parse_reference(text, base) if text.__class__ is str else None
        if parsed is not None:
            out.append(ReferenceEntry(param, parsed.type, parsed.id, parsed.version, parsed.url, isys, ivalue))
        elif isys or ivalue:
            out.append(ReferenceEntry(param, _str(value.get("type")), None, None, None, isys, ivalue))

    def index_canonical(param: str, value: Any, out: list[Any]) -> None:
        if value.__class__ is str and value:
            url, version = parse_canonical(value)
            out.append(ReferenceEntry(param, None, None, version, url))

    def index_resource(param: str, value: Any, out: list[Any]) -> None:
        if value.__class__ is dict and _str(value.get("resourceType")) and _str(value.get("id")):
            out.append(ReferenceEntry(param, value["resourceType"], value["id"]))

    return {
        "Reference": index_reference,
        "canonical": index_canonical,
        "uri": index_canonical,
        "url": index_canonical,
        "Resource": index_resource,
    }


def parse_reference_value(
    param: str, targets: tuple[str, ...], type_modifier: str | None, text: str, base: str | None
) -> ReferencePredicate:
    """A reference search value; ValueError when it cannot be read."""
    if not text:
        raise ValueError("empty reference")
    if type_modifier is not None:
        if "/" in text:
            parsed = parse_reference(text, base)
            if parsed is None or parsed.url is not None or parsed.type != type_modifier:
                raise ValueError(f"{text!r} is not a {type_modifier} reference")
            return ReferencePredicate(param, type_modifier, parsed.id, parsed.version)
        return ReferencePredicate(param, type_modifier, text)
    if "://" in text or text.startswith("urn:"):
        if "|" in text:
            url, version = parse_canonical(text)
            return ReferencePredicate(param, None, None, version, url)
        parsed = parse_reference(text, base)
        assert parsed is not None
        if parsed.url is None:  # under our base: a local reference
            return ReferencePredicate(param, parsed.type, parsed.id, parsed.version)
        return ReferencePredicate(param, None, None, parsed.version, parsed.url)
    if "/" in text:
        parsed = parse_reference(text)
        if parsed is None:
            raise ValueError(f"not a reference: {text!r}")
        return ReferencePredicate(param, parsed.type, parsed.id, parsed.version)
    return ReferencePredicate(param, targets[0] if len(targets) == 1 else None, text)


def parse_identifier(param: str, parts: list[str]) -> ReferenceIdentifierPredicate:
    if len(parts) == 1 and parts[0]:
        return ReferenceIdentifierPredicate(param, None, parts[0])
    if len(parts) == 2 and parts[1]:
        return ReferenceIdentifierPredicate(param, parts[0], parts[1])
    raise ValueError(":identifier needs [system]|[value]")


def match_reference(p: ReferencePredicate, e: ReferenceEntry) -> bool:
    if p.version is not None and e.version != p.version:
        return False
    if p.url is not None:
        return e.url == p.url
    return e.url is None and e.id == p.id and (p.type is None or e.type == p.type)


def match_identifier(p: ReferenceIdentifierPredicate, e: ReferenceEntry) -> bool:
    if e.identifier_value != p.value:
        return False
    if p.system is None:
        return True
    if p.system == "":
        return e.identifier_system is None
    return e.identifier_system == p.system
