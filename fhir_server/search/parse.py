"""Query string -> Query AST (FHIR R4 search.html), and back (`format_query`).

`parse_query` refuses only a query past the size limits below. Otherwise it never raises
for client mistakes: a parameter that is unknown, malformed or uses a feature not supported
here is left out of the Query and reported as an `Issue`
(severity warning; code `not-supported` or `invalid`; expression = the parameter name;
details from the operation-outcome code system). The caller lists them in the Bundle's
OperationOutcome, or answers 400 under `Prefer: handling=strict` (search.html#errors).
A parameter is applied whole or not at all: dropping one bad value of an OR list would
silently narrow the result.

Covered: repeated parameters AND, comma OR (`\\,` escapes, as do `\\|`, `\\$`, `\\\\`), all
prefixes, the modifiers missing, exact, contains, text, not, of-type, identifier, [type],
above/below on uri; chains (`subject:Patient.general-practitioner.name=`), reverse chains
(`_has:Observation:patient:code=`, nested), `_sort`, `_count`, `_total`, `_summary`,
`_elements`, `_include`/`_revinclude` (`:iterate`, `*`), `_type` on system search.
Not supported (reported): `:in`, `:not-in`, `:above`/`:below` on tokens and references
(need terminology), `_text`, `_content`, `_query`, `_filter`, `_list`, `_contained`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Final, cast
from urllib.parse import parse_qsl

from ..model.errors import FhirError, Issue, Kind, fail
from .ast import (
    PREFIXES,
    Chain,
    Clause,
    CompositePredicate,
    Has,
    Missing,
    Not,
    Predicate,
    Prefix,
    Query,
    TokenTextPredicate,
)
from . import content
from .format import format_query, split_escaped, unescape
from .params import date, number, reference, special, string, token, uri
from .registry import Registry, SearchParam, default_registry
from .results import ResultParams

__all__ = ["parse_query", "format_query", "ParamError"]

ValueParser = Callable[[str], Predicate]

_IGNORED = frozenset({"_format", "_pretty"})  # handled by the HTTP layer
_UNSUPPORTED = frozenset({"_text", "_content", "_query", "_filter", "_list", "_contained", "_containedType"})
# R4 modifiers this server knows but does not evaluate, by parameter type (they need a
# terminology service or hierarchy knowledge); any other misfit modifier is invalid.
_UNSUPPORTED_MODIFIERS = {"token": frozenset({"in", "not-in", "above", "below"}), "reference": frozenset({"above", "below"})}


class ParamError(ValueError):
    """A parameter that cannot be applied; carries the issue code and details code."""

    def __init__(self, code: str, details: str, message: str) -> None:
        super().__init__(message)
        self.code, self.details = code, details


def _unknown(name: str) -> ParamError:
    return ParamError("not-supported", "MSG_PARAM_UNKNOWN", f'Parameter "{name}" not understood')


def _invalid(name: str, why: str) -> ParamError:
    return ParamError("invalid", "MSG_PARAM_INVALID", f'Parameter "{name}" content is invalid: {why}')


def _bad_modifier(name: str, modifier: str, param_type: str | None = None) -> ParamError:
    if modifier in _UNSUPPORTED_MODIFIERS.get(param_type or "", ()):
        return ParamError("not-supported", "MSG_PARAM_MODIFIER_INVALID", f'Modifier ":{modifier}" of "{name}" is not supported')
    return ParamError("invalid", "MSG_PARAM_MODIFIER_INVALID", f'Parameter "{name}" modifier is invalid')


class _Parser:
    def __init__(self, registry: Registry, base: str | None, now: int | None) -> None:
        self.registry = registry
        self.base = base
        self.now = now

    # --- parameter definitions --------------------------------------------------------

    def lookup(self, types: tuple[str, ...], code: str, name: str) -> SearchParam:
        """The parameter `code` on every one of `types` (one definition type for all);
        `types` () is a system-level search over every type: only common parameters."""
        found = [self.registry.get(t, code) for t in types] if types else [self.registry.common(code)]
        params = [p for p in found if p is not None]
        if not params or len(params) != len(found):
            raise _unknown(name)
        if len({p.type for p in params}) != 1:
            raise _invalid(name, f'"{code}" has different types on {", ".join(types)}')
        if not params[0].expression:
            raise ParamError("not-supported", "MSG_PARAM_UNKNOWN", f'Parameter "{name}" is not supported')
        return params[0]

    def value_parser(self, types: tuple[str, ...], name: str) -> ValueParser | tuple[str, ValueParser]:
        """How to read one value of parameter `name`; `("not", parser)` for `:not`."""
        if name.startswith("_has:"):
            return self.has(types, name)
        head, dot, tail = name.partition(".")
        code, _, modifier = head.partition(":")
        sp = self.lookup(types, code, name)
        if dot:
            return self.chain(sp, code, modifier, tail, name)
        if modifier == "missing":
            return lambda v: Missing(code, _boolean(name, v))
        if modifier == "not":
            if sp.type != "token":
                raise _bad_modifier(name, modifier)
            return ("not", self.typed(sp, None, name))
        return self.typed(sp, modifier or None, name)

    def typed(self, sp: SearchParam, modifier: str | None, name: str) -> ValueParser:
        code, t = sp.code, sp.type
        if t == "string":
            if modifier not in (None, "exact", "contains"):
                raise _bad_modifier(name, modifier or "")
            return lambda v: string.parse_string(code, modifier, _nonempty(name, unescape(v)))
        if t == "token":
            if modifier == "text":
                return lambda v: TokenTextPredicate(code, string.normalize(_nonempty(name, unescape(v))), unescape(v))
            if modifier == "of-type":
                return lambda v: _checked(name, lambda: token.parse_of_type(code, _parts(v, "|")))
            if modifier is not None:
                raise _bad_modifier(name, modifier, t)
            return lambda v: _checked(name, lambda: token.parse_token(code, _parts(v, "|")))
        if t == "reference":
            return self.reference(sp, modifier, name)
        if modifier is not None:
            if t == "uri" and modifier in ("above", "below"):
                return lambda v: _checked(name, lambda: uri.parse_uri(code, modifier, unescape(v)))
            raise _bad_modifier(name, modifier, t)
        if t == "uri":
            return lambda v: _checked(name, lambda: uri.parse_uri(code, None, unescape(v)))
        if t == "date":
            return lambda v: _checked(name, lambda: date.parse_date(code, *_prefixed(unescape(v)), now=self.now))
        if t == "number":
            return lambda v: _checked(name, lambda: number.parse_number(code, *_prefixed(unescape(v))))
        if t == "quantity":
            return lambda v: _checked(name, lambda: self.quantity(code, v))
        if t == "composite":
            return self.composite(sp, name)
        if t == "special" and code == "near":
            return lambda v: _checked(name, lambda: special.parse_near(code, _parts(v, "|"), unescape(v)))
        raise ParamError("not-supported", "MSG_PARAM_UNKNOWN", f'Parameter "{name}" is not supported')

    def reference(self, sp: SearchParam, modifier: str | None, name: str) -> ValueParser:
        code = sp.code
        if modifier == "identifier":
            return lambda v: _checked(name, lambda: reference.parse_identifier(code, _parts(v, "|")))
        if modifier is not None:
            if modifier not in self.registry.resource_types:
                raise _bad_modifier(name, modifier, "reference")
            if sp.targets and modifier not in sp.targets:
                raise _invalid(name, f"{modifier} is not a target of {code}")
        targets = sp.targets
        return lambda v: _checked(
            name, lambda: reference.parse_reference_value(code, targets, modifier, unescape(v), self.base)
        )

    def quantity(self, code: str, raw: str) -> Predicate:
        parts = _parts(raw, "|")
        if len(parts) not in (1, 3):
            raise ValueError("a quantity is [number] or [number]|[system]|[code]")
        prefix, text = _prefixed(parts[0])
        system = parts[1] if len(parts) == 3 and parts[1] else None
        unit = parts[2] if len(parts) == 3 and parts[2] else None
        if system is not None and unit is None:
            raise ValueError("a quantity system needs a code")
        return number.parse_quantity(code, prefix, text, system, unit)

    def composite(self, sp: SearchParam, name: str) -> ValueParser:
        parsers: list[ValueParser] = []
        for comp in sp.components:
            definition = self.registry.by_url(comp.definition)
            if definition is None:
                raise ParamError("not-supported", "MSG_PARAM_UNKNOWN", f'Parameter "{name}" is not supported')
            # The component's own definition gives its type; its code names the entries.
            parsers.append(self.typed(definition, None, name))

        def parse(v: str) -> Predicate:
            parts = split_escaped(v, "$")
            if len(parts) != len(parsers):
                raise _invalid(name, f"expected {len(parsers)} parts separated by $")
            return CompositePredicate(sp.code, tuple(_rename(p(part), c.code) for p, part, c in zip(parsers, parts, sp.components)))

        return parse

    def chain(self, sp: SearchParam, code: str, modifier: str, tail: str, name: str) -> ValueParser:
        """`code[:Type].tail` (search.html#chaining)."""
        if sp.type != "reference":
            raise ParamError("invalid", "MSG_PARAM_CHAINED", f'Unknown chained parameter name "{name}"')
        next_code = tail.partition(".")[0].partition(":")[0]
        if modifier:
            if modifier not in self.registry.resource_types or (sp.targets and modifier not in sp.targets):
                raise _bad_modifier(name, modifier)
            targets: tuple[str, ...] = (modifier,)
        else:
            # Sorted: the AST is canonical whatever order the definition lists its targets in.
            targets = tuple(sorted(t for t in sp.targets if self.registry.get(t, next_code) is not None))
        if not targets or next_code == "_has":
            raise ParamError("invalid", "MSG_PARAM_CHAINED", f'Unknown chained parameter name "{name}"')
        inner = self.value_parser(targets, tail)
        if isinstance(inner, tuple):  # `:not` at the end of a chain: resource-level negation
            raise ParamError("not-supported", "MSG_PARAM_MODIFIER_INVALID", f'":not" in chain "{name}" is not supported')
        return lambda v: Chain(code, targets, inner(v))

    def has(self, types: tuple[str, ...], name: str) -> ValueParser:
        """`_has:Type:ref:rest` (search.html#has)."""
        parts = name.split(":", 3)
        if len(parts) != 4 or not all(parts[1:]):
            raise _invalid(name, "expected _has:[type]:[reference parameter]:[parameter]")
        _, source, ref_code, rest = parts
        if source not in self.registry.resource_types:
            raise _invalid(name, f"unknown resource type {source}")
        ref = self.registry.get(source, ref_code)
        if ref is None or ref.type != "reference":
            raise _invalid(name, f"{ref_code} is not a reference parameter of {source}")
        if ref.targets and types and not set(types) & set(ref.targets):
            raise _invalid(name, f"{source}.{ref_code} does not point to {', '.join(types)}")
        inner = self.value_parser((source,), rest)
        if isinstance(inner, tuple):
            raise ParamError("not-supported", "MSG_PARAM_MODIFIER_INVALID", f'":not" in "{name}" is not supported')
        return lambda v: Has(source, ref_code, inner(v))

    # --- one query parameter ------------------------------------------------------------

    def clause(self, types: tuple[str, ...], name: str, raw: str) -> Clause:
        parser = self.value_parser(types, name)
        values = split_escaped(raw, ",")
        if len(values) > 1 and not name.startswith("_has:") and "." not in name:
            sp = self.lookup(types, name.partition(":")[0], name)
            if not sp.multiple_or:
                raise _invalid(name, "only one value is allowed (multipleOr is false)")
        if isinstance(parser, tuple):
            inner = parser[1]
            return Clause((Not(name.partition(":")[0], tuple(inner(v) for v in values)),))
        return Clause(tuple(parser(v) for v in values))


def _rename(p: Predicate, code: str) -> Predicate:
    """Composite parts are parsed by their definition; entries use the component code."""
    if isinstance(p, (Chain, Has)):
        raise ValueError("composite parts cannot chain")
    return dataclasses.replace(p, param=code)


def _checked(name: str, build: Callable[[], Predicate]) -> Predicate:
    try:
        return build()
    except ValueError as exc:
        if isinstance(exc, ParamError):
            raise
        raise _invalid(name, str(exc)) from exc


def _parts(raw: str, sep: str) -> list[str]:
    return [unescape(p) for p in split_escaped(raw, sep)]


def _nonempty(name: str, value: str) -> str:
    if not value:
        raise _invalid(name, "empty value")
    return value


def _boolean(name: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise _invalid(name, ":missing takes true or false")
    return value == "true"


def _prefixed(value: str) -> tuple[Prefix, str]:
    """Split `ge2020` into ("ge", "2020"); no prefix means eq (search.html#prefix)."""
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] in "-+."):
        return cast(Prefix, value[:2]), value[2:]
    return "eq", value


MAX_PARAMETERS: Final = 100
"""Most parameters in one query (each AND-ed): SQLite refuses expression trees deeper than 1000."""
MAX_VALUES: Final = 100
"""Most comma-separated values (OR-ed) in one parameter."""
MAX_QUERY_VALUES: Final = 1000
"""Most values over all parameters of one query: each is a predicate the store plans."""


def _check_size(params: list[tuple[str, str]]) -> None:
    """INVALID (code too-costly) for a query past the limits above: unlike a parameter that
    is not understood, it cannot be left out without widening the result."""
    counted = [(name, len(split_escaped(raw, ","))) for name, raw in params if name not in _IGNORED]
    if len(counted) > MAX_PARAMETERS:
        raise _too_costly(f"The query has {len(counted)} parameters; the limit is {MAX_PARAMETERS}.")
    for name, values in counted:
        if values > MAX_VALUES:
            raise _too_costly(f'Parameter "{name}" has {values} values; the limit is {MAX_VALUES}.', name)
    total = sum(values for _, values in counted)
    if total > MAX_QUERY_VALUES:
        raise _too_costly(f"The query has {total} values; the limit is {MAX_QUERY_VALUES}.")


def _too_costly(message: str, name: str | None = None) -> FhirError:
    return fail(Kind.INVALID, "too-costly", message, expression=name)


def _has_content(registry: Registry, types: tuple[str, ...]) -> bool:
    """Whether every searched type indexes `_content` (content.py)."""
    return bool(types) and all((sp := registry.get(t, content.CODE)) is not None and sp.expression
                               for t in types)


def _content(name: str, raw: str) -> list[Clause]:
    if name != content.CODE:
        raise _bad_modifier(name, name.partition(":")[2])
    try:
        return content.clauses(raw)
    except ValueError as exc:
        raise _invalid(name, str(exc)) from None


def query_pairs(query_string: str | bytes) -> list[tuple[str, str]]:
    """The (name, value) pairs of a query string or form body, percent-decoded as UTF-8.
    INVALID if it is not UTF-8: a value replaced by U+FFFD would search for something the
    client did not ask for."""
    try:
        text = query_string.decode("utf-8") if isinstance(query_string, bytes) else query_string
        return parse_qsl(text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise fail(Kind.INVALID, "invalid", "The query is not UTF-8 once percent-decoded.") from None


def parse_query(
    resource_type: str | None,
    params: Iterable[tuple[str, str]],
    registry: Registry | None = None,
    *,
    base: str | None = None,
    now: int | None = None,
) -> tuple[Query, list[Issue]]:
    """The Query of a search on `resource_type` (None: system level), and what was not applied.

    Raises INVALID only for a query past the size limits (`MAX_PARAMETERS` and its kin).

    `base` is this server's base URL (absolute references under it are local); `now`
    (microseconds since the epoch) fixes the `ap` window of dates, for tests.
    """
    registry = registry or default_registry()
    params = list(params)
    _check_size(params)
    issues: list[Issue] = []
    parser = _Parser(registry, base, now)
    results = ResultParams(registry, issues)
    types = results.types(resource_type, params)
    clauses: list[Clause] = []
    seen: set[str] = set()
    for name, raw in params:
        if name in _IGNORED or results.handle(name, raw, types):
            continue
        try:
            if name.partition(":")[0] == content.CODE and _has_content(registry, types):
                clauses += _content(name, raw)
                continue
            if name.partition(":")[0] in _UNSUPPORTED:
                raise ParamError("not-supported", "MSG_PARAM_UNKNOWN", f'Parameter "{name}" is not supported')
            if name in seen and "." not in name and not name.startswith("_has:"):
                sp = parser.lookup(types, name.partition(":")[0], name)
                if not sp.multiple_and:
                    raise ParamError("invalid", "MSG_PARAM_NO_REPEAT", f'Parameter "{name}" is not allowed to repeat')
            clauses.append(parser.clause(types, name, raw))
            seen.add(name)
        except ParamError as exc:
            issues.append(Issue(exc.code, str(exc), "warning", (name,), exc.details))
    return results.query(resource_type, tuple(clauses), types), issues
