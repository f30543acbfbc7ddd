"""`_content` (FHIR R4 search.html#_content: "search on the entire content of the resource"),
for the types whose `_content` SearchParameter has an expression naming the resource itself
(profiles/SearchParameter-ResearchStudy-content.json: ResearchStudy; elsewhere `_content`
stays unsupported, reported and not applied).

Indexing: one string entry per resource, every string value of the resource (narrative
without its tags, extensions at any depth included; not the structural URIs `url`, `system`,
`reference`, `resourceType`), each normalized as string parameters are (case, accents,
whitespace), joined by a separator no normalized term can hold.

Searching: `_content=breast cancer` asks for every term, anywhere in the resource (a term
matches inside words: `_content=carcin` finds "carcinoma"); `"triple negative"` in double
quotes is one term (a phrase within one element); a comma separates alternatives
(`_content=melanoma,"renal cell"`). The OR of ANDs is rewritten as an AND of ORs (its
conjunctive form), which the query AST expresses; past MAX_CLAUSES clauses it is refused.
"""

from __future__ import annotations

import re
from typing import Any

from .ast import Clause, StringPredicate
from .entries import StringEntry
from .format import split_escaped, unescape
from .params.string import normalize

CODE = "_content"
SEPARATOR = "\x1f"  # str.split() treats it as whitespace: normalize() never leaves one in a term
MAX_CLAUSES = 64
_SKIPPED = frozenset({"url", "system", "reference", "resourceType"})
_TAG = re.compile(r"<[^>]*>")
_TERM = re.compile(r'"([^"]*)"|(\S+)')


def _strings(value: Any, key: str, out: list[str]) -> None:
    if value.__class__ is str:
        if key not in _SKIPPED:
            out.append(_TAG.sub(" ", value) if key == "div" else value)
    elif value.__class__ is dict:
        for name, item in value.items():
            _strings(item, name, out)
    elif value.__class__ is list:
        for item in value:
            _strings(item, key, out)


def index_text(param: str, resource: Any, out: list[Any]) -> None:
    """The one `_content` entry of a resource: all its text, normalized."""
    found: list[str] = []
    _strings(resource, "", found)
    text = SEPARATOR.join(dict.fromkeys(t for t in map(normalize, found) if t))
    if text:
        out.append(StringEntry(param, text, ""))


def terms(alternative: str) -> list[str]:
    """The normalized terms of one alternative (words, and phrases in double quotes)."""
    found = [normalize(quoted or word) for quoted, word in _TERM.findall(alternative)]
    return [t for t in found if t]


def clauses(raw: str) -> list[Clause]:
    """The clauses (ANDed) of a `_content` value; ValueError if it has no term or would need
    more than MAX_CLAUSES clauses."""
    alternatives = [terms(unescape(a)) for a in split_escaped(raw, ",")]
    if not alternatives or any(not a for a in alternatives):
        raise ValueError("each alternative needs at least one term")
    size = 1
    for alternative in alternatives:
        size *= len(alternative)
    if size > MAX_CLAUSES:
        raise ValueError(f"the terms would need {size} clauses; the limit is {MAX_CLAUSES}")
    # (a AND b) OR c  ==  (a OR c) AND (b OR c): one term of each alternative per clause.
    combos: list[tuple[str, ...]] = [()]
    for alternative in alternatives:
        combos = [(*combo, term) for combo in combos for term in alternative]
    return [Clause(tuple(StringPredicate(CODE, t, t, "contains") for t in dict.fromkeys(combo)))
            for combo in dict.fromkeys(combos)]
