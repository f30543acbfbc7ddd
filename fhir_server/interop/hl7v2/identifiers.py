"""Resources by identifier: the search token (`system|value`, FHIR search.html#escaping) of
the conditional writes that make a resent message change nothing, and the look-up of what
is stored under an identifier (through the service layer: access decided, reads audited)."""

from __future__ import annotations

from typing import Any

import orjson

from ...services import search
from ...services.context import Context
from .problems import Code, error

_SPECIAL = ("\\", "|", ",", "$")


def _escaped(text: str) -> str:
    for char in _SPECIAL:
        text = text.replace(char, "\\" + char)
    return text


def identifier_token(identifier: dict[str, Any]) -> str:
    """`system|value` of an identifier (the mappings require a system on identifying fields)."""
    return f"{_escaped(identifier.get('system', ''))}|{_escaped(identifier.get('value', ''))}"


async def stored_with(ctx: Context, resource_type: str, *identifiers: dict[str, Any]) -> list[dict[str, Any]]:
    """The current resources of `resource_type` that have one of `identifiers` (one search:
    the tokens OR-ed). More than a page of them is refused rather than half-read."""
    tokens = ",".join(identifier_token(identifier) for identifier in identifiers)
    found = await search.search(ctx, resource_type, [("identifier", tokens),
                                                     ("_count", str(ctx.max_page_size))], strict=True)
    if any(link.get("relation") == "next" for link in found.get("link", [])):
        raise error(Code.DUPLICATE_KEY, f"More than {ctx.max_page_size} {resource_type} resources "
                    "have these identifiers.")
    # Search renders stored JSON as it is (orjson fragments): read back as dicts.
    return [orjson.loads(orjson.dumps(e["resource"])) for e in found.get("entry", [])
            if e["search"]["mode"] == "match"]
