"""Query AST -> query parameters, the inverse of `parse_query` (FHIR R4 search.html#self):
the self link of a searchset shows the parameters actually applied.

Values are written in the canonical form of what was parsed (`Patient/1` rather than `1`
when the type was implied, `eq` prefixes dropped); `parse_query(format_query(q))` gives `q`
back. A clause whose predicates do not share one parameter name (possible only for clauses
built in code, such as an access filter) has no query-string form and is left out.
"""

from __future__ import annotations

from .ast import (
    Chain,
    CompositePredicate,
    DatePredicate,
    Has,
    Include,
    Missing,
    NearPredicate,
    Not,
    NumberPredicate,
    OfTypePredicate,
    Predicate,
    QuantityPredicate,
    Query,
    ReferenceIdentifierPredicate,
    ReferencePredicate,
    StringPredicate,
    TokenPredicate,
    TokenTextPredicate,
    UriPredicate,
)

_SPECIAL = ("\\", ",", "|", "$")


def split_escaped(text: str, sep: str) -> list[str]:
    """Split on `sep` not preceded by a backslash; escapes stay in the parts."""
    if "\\" not in text:  # nearly every value: no escape to step over
        return text.split(sep)
    parts, current, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if c == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    """Drop the backslash of `\\,`, `\\|`, `\\$` and `\\\\` (search.html#escaping)."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _SPECIAL:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def escape(text: str) -> str:
    for c in _SPECIAL:
        text = text.replace(c, "\\" + c)
    return text


def _prefixed(prefix: str, text: str) -> str:
    return text if prefix == "eq" else prefix + text


def _reference(p: ReferencePredicate) -> str:
    if p.url is not None:
        return escape(p.url + (f"|{p.version}" if p.version else ""))
    ref = f"{p.type}/{p.id}" if p.type else str(p.id)
    return escape(ref + (f"/_history/{p.version}" if p.version else ""))


def predicate_param(p: Predicate) -> tuple[str, str]:
    """(parameter name with modifiers and chain, one value) of a predicate."""
    if isinstance(p, StringPredicate):
        return p.param + ("" if p.mode == "start" else f":{p.mode}"), escape(p.exact)
    if isinstance(p, TokenPredicate):
        code = escape(p.code or "")
        return p.param, code if p.system is None else f"{escape(p.system)}|{code}"
    if isinstance(p, TokenTextPredicate):
        return f"{p.param}:text", escape(p.exact)
    if isinstance(p, OfTypePredicate):
        return f"{p.param}:of-type", "|".join(escape(x) for x in (p.type_system, p.type_code, p.value))
    if isinstance(p, ReferencePredicate):
        return p.param, _reference(p)
    if isinstance(p, ReferenceIdentifierPredicate):
        value = escape(p.value or "")
        return f"{p.param}:identifier", value if p.system is None else f"{escape(p.system)}|{value}"
    if isinstance(p, (DatePredicate, NumberPredicate)):
        return p.param, _prefixed(p.prefix, escape(p.text))
    if isinstance(p, QuantityPredicate):
        value = _prefixed(p.prefix, escape(p.text))
        if p.code is not None:
            value += f"|{escape(p.system or '')}|{escape(p.code)}"
        return p.param, value
    if isinstance(p, UriPredicate):
        return p.param + ("" if p.mode == "eq" else f":{p.mode}"), escape(p.value)
    if isinstance(p, NearPredicate):
        return p.param, p.text
    if isinstance(p, CompositePredicate):
        return p.param, "$".join(predicate_param(part)[1] for part in p.parts)
    if isinstance(p, Missing):
        return f"{p.param}:missing", "true" if p.missing else "false"
    if isinstance(p, Not):
        return f"{p.param}:not", ",".join(predicate_param(i)[1] for i in p.any_of)
    if isinstance(p, Chain):
        name, value = predicate_param(p.inner)
        head = p.param + (f":{p.target_types[0]}" if len(p.target_types) == 1 else "")
        return f"{head}.{name}", value
    if isinstance(p, Has):
        name, value = predicate_param(p.inner)
        return f"_has:{p.target_type}:{p.ref_param}:{name}", value
    raise TypeError(f"not a predicate: {p!r}")


def _include(spec: Include) -> str:
    if spec.source_type is None:
        return "*"
    return ":".join(x for x in (spec.source_type, spec.param or "*", spec.target_type) if x)


def format_query(query: Query) -> list[tuple[str, str]]:
    """The query parameters that `parse_query` reads back as `query`."""
    out: list[tuple[str, str]] = []
    if query.resource_type is None and query.types:
        out.append(("_type", ",".join(query.types)))
    for clause in query.clauses:
        pairs = [predicate_param(p) for p in clause.any_of]
        names = {name for name, _ in pairs}
        if len(names) == 1:
            out.append((names.pop(), ",".join(value for _, value in pairs)))
    if query.sort:
        out.append(("_sort", ",".join(("-" if s.descending else "") + s.param for s in query.sort)))
    if query.count is not None:
        out.append(("_count", str(query.count)))
    for name, specs in (("_include", query.include), ("_revinclude", query.revinclude)):
        for spec in specs:
            out.append((name + (":iterate" if spec.iterate else ""), _include(spec)))
    if query.total is not None:
        out.append(("_total", query.total))
    if query.summary is not None:
        out.append(("_summary", query.summary))
    if query.elements:
        out.append(("_elements", ",".join(query.elements)))
    return out
