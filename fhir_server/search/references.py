"""Reading literal references (FHIR R4 references.html#literal, search.html#reference).

A Reference.reference is one of: relative `Type/id[/_history/vid]`, absolute
`http(s)://base/Type/id[/_history/vid]`, a logical URN (`urn:uuid:...`, `urn:oid:...`) or a
contained `#id`. Canonicals (canonical.html) are `url[|version]`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, NamedTuple

# references.html: ((http|https)://([A-Za-z0-9\-\\\.\:\%\$]*\/)+)?(Type)\/[A-Za-z0-9\-\.]{1,64}
# (\/_history\/[A-Za-z0-9\-\.]{1,64})? -- the type list is replaced by "a capitalised word".
_TAIL = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?$"
)


class ParsedReference(NamedTuple):
    """The parts of a literal reference; `url` is set only for absolute references and URNs."""

    type: str | None
    id: str | None
    version: str | None
    url: str | None


_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@lru_cache(maxsize=1 << 14)
def parse_reference(text: str, base: str | None = None) -> ParsedReference | None:
    """Split a Reference.reference; None for contained (`#id`) and unreadable references.

    An absolute URL under `base` (this server's base URL) is read as the relative reference it is.
    Cached: a patient's resources repeat the same few references.
    """
    if not text or text.startswith("#"):
        return None
    if ":" not in text:  # relative: Type/id or Type/id/_history/vid
        parts = text.split("/")
        n = len(parts)
        if (n == 2 or (n == 4 and parts[2] == "_history")) and parts[0][:1].isupper() and parts[0].isalpha():
            if _ID.fullmatch(parts[1]) and (n == 2 or _ID.fullmatch(parts[3])):
                return ParsedReference(parts[0], parts[1], parts[3] if n == 4 else None, None)
        return None
    if base and text.startswith(base.rstrip("/") + "/"):
        text = text[len(base.rstrip("/")) + 1 :]
    absolute = "://" in text or text.startswith("urn:")
    match = _TAIL.search(text) if not text.startswith("urn:") else None
    if not absolute:
        if match is None or match.start() != 0:
            return None
        return ParsedReference(match["type"], match["id"], match["version"], None)
    if match is None:
        return ParsedReference(None, None, None, text)
    url = text[: match.start("version") - len("/_history/")] if match["version"] else text
    return ParsedReference(match["type"], match["id"], match["version"], url)


def type_and_id(text: str) -> str | None:
    """`Type/id` of a literal reference in any form (relative, absolute, version-specific);
    None when it names no resource."""
    parsed = parse_reference(text)
    return f"{parsed.type}/{parsed.id}" if parsed is not None and parsed.type else None


def parse_canonical(text: str) -> tuple[str, str | None]:
    """Split `url|version` (canonical.html#versions)."""
    url, sep, version = text.partition("|")
    return url, (version or None) if sep else None


def reference_type(reference: dict[str, Any]) -> str | None:
    """The resource type a Reference points at, read from its literal reference only."""
    text = reference.get("reference")
    if text.__class__ is not str:
        return None
    parsed = parse_reference(text)
    return parsed.type if parsed else None
