"""The input of a terminology operation, from a query string (GET) or a Parameters resource
(POST), read one way (FHIR R4 operations.html#request: simple parameters may be given in the
URL, complex ones only in a Parameters body); and the Parameters the operations answer.

Every mistake is INVALID (400) with the parameter in `expression`: a parameter the operation
does not define, one given twice that may appear once, a value of the wrong type, both or
neither of two alternatives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..model.errors import Kind, fail

Pair = tuple[str, Any]  # (name, str from a URL | a Parameters.parameter dict)
_PRIMITIVES = ("valueString", "valueUri", "valueCode", "valueCanonical", "valueUrl",
               "valueId", "valueDateTime", "valueDate")


def pairs_of(parameters: dict[str, Any]) -> list[Pair]:
    """The (name, parameter) pairs of a Parameters resource; INVALID if it is not one."""
    if parameters.get("resourceType") != "Parameters":
        raise invalid("The body of a terminology operation is a Parameters resource.",
                      "resourceType")
    items = parameters.get("parameter", [])
    if not isinstance(items, list) or not all(isinstance(p, dict) and isinstance(p.get("name"), str)
                                              for p in items):
        raise invalid("Each Parameters.parameter needs a name.", "Parameters.parameter")
    return [(p["name"], p) for p in items]


class Inputs:
    """The parameters of one call, checked at once against the names and types the operation
    defines (`allowed`: name -> `text`, `boolean`, `integer`, or the key of a complex value
    such as `valueCoding` or `resource`). Query parameters starting with `_`, such as
    `_format`, are the HTTP layer's."""

    def __init__(self, pairs: Iterable[Pair], allowed: Mapping[str, str],
                 repeatable: Sequence[str] = ()) -> None:
        self._values: dict[str, list[Any]] = {}
        for name, value in pairs:
            if name.startswith("_") and isinstance(value, str):
                continue
            kind = allowed.get(name)
            if kind is None:
                raise invalid(f"Unknown parameter {name!r}; this operation takes "
                              f"{', '.join(allowed)}.", name)
            self._values.setdefault(name, []).append(_read(name, kind, value))
        for name, values in self._values.items():
            if len(values) > 1 and name not in repeatable:
                raise invalid(f"Parameter {name!r} may be given once.", name)

    def has(self, name: str) -> bool:
        return name in self._values

    def value(self, name: str) -> Any:
        """The first value of `name` as read (text, bool, int or dict), None when absent."""
        values = self._values.get(name)
        return values[0] if values else None

    def string(self, name: str) -> str | None:
        """A text parameter's value, or None when absent."""
        values = self.strings(name)
        return values[0] if values else None

    def strings(self, name: str) -> list[str]:
        return [str(v) for v in self._values.get(name, [])]

    def boolean(self, name: str) -> bool | None:
        values = self._values.get(name)
        return bool(values[0]) if values else None

    def integer(self, name: str) -> int | None:
        values = self._values.get(name)
        return int(values[0]) if values else None

    def complex(self, name: str) -> dict[str, Any] | None:
        """A complex parameter's value (a Coding, a resource, ...), or None when absent."""
        values = self._values.get(name)
        return dict(values[0]) if values else None

    def codings(self, system_name: str = "system", default_system: str | None = None
                ) -> list[dict[str, Any]]:
        """The codings to check: `code` (+ `system`, `version`, `display`), or `coding`, or
        `codeableConcept`; exactly one of the three forms. A code's system is parameter
        `system_name`, else `default_system` (an instance operation's own)."""
        forms = [n for n in ("code", "coding", "codeableConcept") if self.has(n)]
        if len(forms) != 1:
            raise invalid("Give exactly one of code (with system), coding or codeableConcept; "
                          f"got {', '.join(forms) or 'none'}.", forms[1] if len(forms) > 1 else "code")
        if forms[0] == "code":
            system = self.string(system_name) or default_system
            if system is None:
                raise required(f"A code needs its system ({system_name}).", system_name)
            coding = {"system": system, "code": self.string("code")}
            for name, key in (("version", "version"), ("systemVersion", "version"),
                              ("display", "display")):
                if self.has(name):
                    coding[key] = self.string(name)
            return [{k: v for k, v in coding.items() if v is not None}]
        if forms[0] == "coding":
            return [self.complex("coding") or {}]
        concept = self.complex("codeableConcept") or {}
        codings = concept.get("coding")
        if not isinstance(codings, list) or not codings:
            raise invalid("codeableConcept holds no coding.", "codeableConcept")
        return codings


def _read(name: str, kind: str, value: Any) -> Any:
    """A parameter's value, checked against its kind; INVALID naming it otherwise."""
    if kind == "text":
        found = value if isinstance(value, str) else next(
            (value[k] for k in _PRIMITIVES if k in value), None)
        if not isinstance(found, str) or not found.strip():
            raise invalid(f"Parameter {name!r} needs a non-empty value.", name)
        return found
    if kind == "boolean":
        found = ({"true": True, "false": False}.get(value) if isinstance(value, str)
                 else value.get("valueBoolean"))
        if not isinstance(found, bool):
            raise invalid(f"Parameter {name!r} is true or false.", name)
        return found
    if kind == "integer":
        found = (int(value) if value.isascii() and value.isdigit() and len(value) < 10 else None) \
            if isinstance(value, str) else value.get("valueInteger")
        if not isinstance(found, int) or isinstance(found, bool) or found < 0:
            raise invalid(f"Parameter {name!r} is a non-negative integer.", name)
        return found
    found = value.get(kind) if isinstance(value, dict) else None
    if not isinstance(found, dict):
        raise invalid(f"Parameter {name!r} is a {kind.removeprefix('value')}, sent in a "
                      "Parameters body (POST).", name)
    return found


def invalid(message: str, parameter: str) -> Exception:
    return fail(Kind.INVALID, "invalid", message, expression=parameter)


def required(message: str, parameter: str) -> Exception:
    return fail(Kind.INVALID, "required", message, expression=parameter)


def parameters(*items: dict[str, Any] | None) -> dict[str, Any]:
    """A Parameters resource of the given parameters (None ones left out)."""
    return {"resourceType": "Parameters", "parameter": [p for p in items if p is not None]}


def param(name: str, key: str, value: Any) -> dict[str, Any] | None:
    """One output parameter `name` with `value[x]` under `key` (None when value is None)."""
    return None if value is None else {"name": name, key: value}
