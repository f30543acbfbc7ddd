"""The result parameters of a search (FHIR R4 search.html#return): `_sort`, `_count`,
`_include`, `_revinclude`, `_total`, `_summary`, `_elements`, and `_type` (system search).

`ResultParams.handle` consumes one of them, recording problems as warning issues in the
same way as `parse.py` (the parameter is then not applied).
"""

from __future__ import annotations

import re
from typing import cast

from ..model.errors import Issue
from ..model.numbers import whole_number
from .ast import Clause, Include, Query, Sort, Summary, Total
from .registry import Registry

_TOTALS = ("none", "estimate", "accurate")
_SUMMARIES = ("true", "text", "data", "count", "false")
_ELEMENT = re.compile(r"[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)?")
_NO_SORT = frozenset({"composite", "special"})


class _Invalid(ValueError):
    pass


class ResultParams:
    """Collects result parameters while the search parameters are parsed."""

    def __init__(self, registry: Registry, issues: list[Issue]) -> None:
        self.registry = registry
        self.issues = issues
        self.sort: tuple[Sort, ...] = ()
        self.count: int | None = None
        self.include: list[Include] = []
        self.revinclude: list[Include] = []
        self.total: Total | None = None
        self.summary: Summary | None = None
        self.elements: tuple[str, ...] = ()
        self._seen: set[str] = set()

    def types(self, resource_type: str | None, params: list[tuple[str, str]]) -> tuple[str, ...]:
        """The types searched: the resource type, `_type`'s list, or () for every type."""
        values = [raw for name, raw in params if name == "_type"]
        if resource_type is not None:
            if values:
                self._issue("_type", "invalid", "MSG_PARAM_INVALID", "_type applies to system-level search only")
            return (resource_type,)
        types: list[str] = []
        for raw in values:
            for t in raw.split(","):
                if t not in self.registry.resource_types:
                    self._issue("_type", "invalid", "MSG_PARAM_INVALID", f'Parameter "_type" content is invalid: unknown type {t!r}')
                    return ()
                types.append(t)
        return tuple(dict.fromkeys(types))

    def handle(self, name: str, raw: str, types: tuple[str, ...]) -> bool:
        """True when `name` is a result parameter (then consumed, applied or reported)."""
        base, _, modifier = name.partition(":")
        handlers = {
            "_sort": self._sort,
            "_count": self._count,
            "_total": self._total,
            "_summary": self._summary,
            "_elements": self._elements,
            "_include": self._include,
            "_revinclude": self._include,
            "_type": lambda *_: None,
        }
        handler = handlers.get(base)
        if handler is None:
            return False
        try:
            if modifier and (base not in ("_include", "_revinclude") or modifier not in ("iterate", "recurse")):
                raise _Invalid(f'Parameter "{name}" modifier is invalid')
            if base in self._seen and base not in ("_include", "_revinclude", "_type"):
                raise _Invalid(f'Parameter "{name}" is not allowed to repeat')
            handler(name, raw, types)
            self._seen.add(base)
        except _Invalid as exc:
            self._issue(name, "invalid", "MSG_PARAM_INVALID", str(exc))
        return True

    def query(self, resource_type: str | None, clauses: tuple[Clause, ...], types: tuple[str, ...]) -> Query:
        return Query(
            resource_type=resource_type,
            clauses=clauses,
            sort=self.sort,
            count=self.count,
            include=tuple(self.include),
            revinclude=tuple(self.revinclude),
            total=self.total,
            summary=self.summary,
            elements=self.elements,
            types=types if resource_type is None else (),
        )

    def _issue(self, name: str, code: str, details: str, message: str) -> None:
        self.issues.append(Issue(code, message, "warning", (name,), details))

    def _param(self, types: tuple[str, ...], code: str) -> str | None:
        """The type of parameter `code` on all `types` (None if unknown anywhere)."""
        found = [self.registry.get(t, code) for t in types] if types else [self.registry.common(code)]
        kinds = {p.type for p in found if p is not None}
        return kinds.pop() if len(kinds) == 1 and all(found) else None

    def _sort(self, name: str, raw: str, types: tuple[str, ...]) -> None:
        keys = []
        for item in raw.split(","):
            code = item[1:] if item.startswith("-") else item
            kind = self._param(types, code)
            if kind is None or kind in _NO_SORT:
                raise _Invalid(f'Parameter "_sort" content is invalid: cannot sort by {code!r}')
            keys.append(Sort(code, item.startswith("-")))
        self.sort = tuple(keys)

    def _count(self, name: str, raw: str, types: tuple[str, ...]) -> None:
        count = whole_number(raw)
        if count is None:
            raise _Invalid('Parameter "_count" content is invalid: a non-negative integer '
                           'of at most 19 digits is required')
        self.count = count

    def _total(self, name: str, raw: str, types: tuple[str, ...]) -> None:
        if raw not in _TOTALS:
            raise _Invalid(f'Parameter "_total" content is invalid: one of {", ".join(_TOTALS)}')
        self.total = cast(Total, raw)

    def _summary(self, name: str, raw: str, types: tuple[str, ...]) -> None:
        if raw not in _SUMMARIES:
            raise _Invalid(f'Parameter "_summary" content is invalid: one of {", ".join(_SUMMARIES)}')
        self.summary = cast(Summary, raw)

    def _elements(self, name: str, raw: str, types: tuple[str, ...]) -> None:
        items = tuple(e.strip() for e in raw.split(",") if e.strip())
        if not items or not all(_ELEMENT.fullmatch(e) for e in items):
            raise _Invalid('Parameter "_elements" content is invalid: a list of element names is required')
        self.elements = items

    def _include(self, name: str, raw: str, types: tuple[str, ...]) -> None:
        """`[source]:[param][:target]`, `[source]:*` or `*` (search.html#include)."""
        reverse = name.startswith("_revinclude")
        iterate = name.endswith((":iterate", ":recurse"))
        parts = raw.split(":")
        if raw == "*":
            spec = Include(None, None, None, iterate)
        elif len(parts) in (2, 3) and all(parts):
            source, code = parts[0], parts[1]
            target = parts[2] if len(parts) == 3 else None
            if source not in self.registry.resource_types:
                raise _Invalid(f'Parameter "{name}" content is invalid: unknown type {source!r}')
            if not reverse and not iterate and types and source not in types:
                raise _Invalid(f'Parameter "{name}" content is invalid: {source} is not searched')
            if code == "*":
                spec = Include(source, None, target, iterate)
            else:
                sp = self.registry.get(source, code)
                if sp is None or sp.type != "reference":
                    raise _Invalid(f'Parameter "{name}" content is invalid: {code!r} is not a reference parameter of {source}')
                if target is not None and (target not in self.registry.resource_types or (sp.targets and target not in sp.targets)):
                    raise _Invalid(f'Parameter "{name}" content is invalid: {target!r} is not a target of {source}.{code}')
                spec = Include(source, code, target, iterate)
        else:
            raise _Invalid(f'Parameter "{name}" content is invalid: expected [type]:[parameter][:[target type]]')
        (self.revinclude if reverse else self.include).append(spec)
