"""Token parameters (FHIR R4 search.html#token).

What each data type indexes (search.html#token table):

    Coding           system | code, text = display
    CodeableConcept  each coding as above; CodeableConcept.text as an entry with text only
    Identifier       system | value, text = type.text, one entry per type coding (:of-type)
    ContactPoint     value (no system)
    boolean          "true" / "false"
    code, string, uri, id, ...   the value (no system: the implicit system of a code bound
                     to a value set is not recorded, so `gender=<system>|male` finds nothing)

Matching: `code` any system; `system|code` both; `|code` entries without a system;
`system|` any code of the system. Codes compare exactly (case-sensitive). `:text` is a string
(normalized starts-with) match on the text; `:of-type` needs type system, type code and
value to match one entry; `:not` is resource-level (see ast.Not).
"""

from __future__ import annotations

from typing import Any

from ..ast import OfTypePredicate, TokenPredicate, TokenTextPredicate
from ..entries import TokenEntry
from .string import normalize


def _text(value: Any) -> str | None:
    return normalize(value) if value.__class__ is str and value else None


def _str(value: Any) -> str | None:
    return value if value.__class__ is str and value else None


def index_coding(param: str, value: Any, out: list[Any]) -> None:
    if value.__class__ is not dict:
        return
    system, code, text = _str(value.get("system")), _str(value.get("code")), _text(value.get("display"))
    if system or code or text:
        out.append(TokenEntry(param, system, code, text))


def index_codeable_concept(param: str, value: Any, out: list[Any]) -> None:
    if value.__class__ is not dict:
        return
    codings = value.get("coding")
    if codings.__class__ is list:
        for coding in codings:  # index_coding inlined: the most frequent indexer
            if coding.__class__ is dict:
                system, code, display = coding.get("system"), coding.get("code"), coding.get("display")
                text = normalize(display) if display.__class__ is str and display else None
                system = system if system.__class__ is str and system else None
                code = code if code.__class__ is str and code else None
                if system or code or text:
                    out.append(TokenEntry(param, system, code, text))
    text = value.get("text")
    if text.__class__ is str and text:
        out.append(TokenEntry(param, None, None, normalize(text)))


def index_identifier(param: str, value: Any, out: list[Any]) -> None:
    if value.__class__ is not dict:
        return
    system, code = _str(value.get("system")), _str(value.get("value"))
    id_type = value.get("type")
    text, codings = None, None
    if id_type.__class__ is dict:
        text = _text(id_type.get("text"))
        codings = id_type.get("coding")
    added = False
    if codings.__class__ is list:
        for coding in codings:
            if coding.__class__ is dict and (coding.get("system") or coding.get("code")):
                out.append(TokenEntry(param, system, code, text, _str(coding.get("system")), _str(coding.get("code"))))
                added = True
    if not added and (system or code or text):
        out.append(TokenEntry(param, system, code, text))


def index_contact_point(param: str, value: Any, out: list[Any]) -> None:
    if value.__class__ is dict and (code := _str(value.get("value"))):
        out.append(TokenEntry(param, None, code))


def index_boolean(param: str, value: Any, out: list[Any]) -> None:
    if value is True or value is False:
        out.append(TokenEntry(param, None, "true" if value else "false"))


def index_code(param: str, value: Any, out: list[Any]) -> None:
    if value.__class__ is str and value:
        out.append(TokenEntry(param, None, value))


INDEXERS = {
    "Coding": index_coding,
    "CodeableConcept": index_codeable_concept,
    "Identifier": index_identifier,
    "ContactPoint": index_contact_point,
    "boolean": index_boolean,
    **{t: index_code for t in ("code", "string", "uri", "url", "canonical", "id", "oid", "uuid", "markdown")},
}


def parse_token(param: str, parts: list[str]) -> TokenPredicate:
    """From the value split on unescaped `|` (1 or 2 parts); ValueError if empty or too many."""
    if len(parts) == 1:
        if not parts[0]:
            raise ValueError("empty token")
        return TokenPredicate(param, None, parts[0])
    if len(parts) != 2:
        raise ValueError("a token is [system]|[code]")
    system, code = parts
    if not system and not code:
        # `|` alone names neither a system nor a code: the spec gives it no meaning.
        raise ValueError("a token needs a system, a code or both")
    return TokenPredicate(param, system, code or None)


def parse_of_type(param: str, parts: list[str]) -> OfTypePredicate:
    if len(parts) != 3 or not all(parts):
        raise ValueError(":of-type needs [system]|[code]|[value]")
    return OfTypePredicate(param, parts[0], parts[1], parts[2])


def match_token(p: TokenPredicate, e: TokenEntry) -> bool:
    if p.code is not None and e.code != p.code:
        return False
    if p.system is None:
        return p.code is not None
    if p.system == "":
        return e.system is None
    return e.system == p.system


def match_token_text(p: TokenTextPredicate, e: TokenEntry) -> bool:
    return e.text is not None and e.text.startswith(p.text)


def match_of_type(p: OfTypePredicate, e: TokenEntry) -> bool:
    return e.type_system == p.type_system and e.type_code == p.type_code and e.code == p.value
