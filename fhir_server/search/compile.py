"""Compile search parameter FHIRPath expressions into typed Python getters.

An expression compiled for one context type (a resource type, a data type, or a backbone
element path such as `Observation.component`) becomes a tuple of `Branch`es. A branch is a
closure `fn(items, root) -> list` plus the FHIR type of everything it returns, known statically
from the element definitions: `Observation.value` becomes one branch per choice type
(`valueQuantity` typed Quantity, `valueCodeableConcept` typed CodeableConcept, ...). So the
indexers never guess a type from the shape of the JSON.

Semantics follow FHIRPath N1 for the subset in `fhirpath.py`; what the compiler cannot prove
exact raises `CompileError`, and the caller falls back to fhirpathpy (`fallback.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import fhirpath as fp
from .registry import Registry
from .references import reference_type

Fn = Callable[[list[Any], dict[str, Any]], list[Any]]
BoolFn = Callable[[list[Any], dict[str, Any]], bool | None]

# Element types whose children are defined inline under the element's own path.
_BACKBONE = frozenset({"BackboneElement", "Element"})
_ABSTRACT_ROOTS = frozenset({"Resource", "DomainResource"})


class CompileError(ValueError):
    """The expression is outside what the compiler handles exactly."""


# A step from one item to the next, as data (for code generation): ("member", json_key),
# ("resolve", type) for where(resolve() is type), ("eq", key, literal) for where(key = 'x').
Op = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Branch:
    """A getter returning values of one FHIR type (or backbone path) from `(items, root)`.

    `ops` spells the same getter as item-wise steps from the input when it is that simple
    (no indexer, `first()`, `%resource` or boolean logic), else None; `()` is the input itself.
    """

    fn: Fn
    type: str
    ops: tuple[Op, ...] | None = None

    @property
    def key(self) -> str | None:
        """The property first read from the input, when known: absent, nothing is found."""
        if self.ops and self.ops[0][0] == "member":
            return self.ops[0][1]
        return None

    @property
    def at_input(self) -> bool:
        return self.ops == ()

    def then(self, fn: Fn, type_name: str, op: Op | None) -> Branch:
        ops = self.ops + (op,) if self.ops is not None and op is not None else None
        return Branch(fn, type_name, ops)


def _identity(items: list[Any], root: dict[str, Any]) -> list[Any]:
    return items


def _root(items: list[Any], root: dict[str, Any]) -> list[Any]:
    return [root]


def _member(prev: Fn, key: str) -> Fn:
    def step(items: list[Any], root: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for item in prev(items, root):
            if item.__class__ is dict:
                value = item.get(key)
                if value is None:
                    continue
                if value.__class__ is list:
                    out.extend(value)
                else:
                    out.append(value)
        return out

    return step


def _slice(prev: Fn, index: int) -> Fn:
    def step(items: list[Any], root: dict[str, Any]) -> list[Any]:
        return prev(items, root)[index : index + 1]

    return step


def _where_resolve_is(prev: Fn, type_name: str) -> Fn:
    # FHIRPath resolve() on a Reference gives the target; `is T` tests its type. The type is
    # read from the literal reference (relative `T/id` or absolute `.../T/id`), which is what a
    # server knows at write time without fetching the target.
    def step(items: list[Any], root: dict[str, Any]) -> list[Any]:
        return [i for i in prev(items, root) if i.__class__ is dict and reference_type(i) == type_name]

    return step


def _where_equals(prev: Fn, key: str, literal: object) -> Fn:
    def step(items: list[Any], root: dict[str, Any]) -> list[Any]:
        return [i for i in prev(items, root) if i.__class__ is dict and i.get(key) == literal]

    return step


def _where_true(prev: Fn, cond: BoolFn) -> Fn:
    # where(): an item stays when the condition, evaluated on it alone, is true (not empty).
    def step(items: list[Any], root: dict[str, Any]) -> list[Any]:
        return [i for i in prev(items, root) if cond([i], root) is True]

    return step


def _from_bool(fn: BoolFn) -> Fn:
    def step(items: list[Any], root: dict[str, Any]) -> list[Any]:
        result = fn(items, root)
        return [] if result is None else [result]

    return step


class Compiler:
    """Compiles expressions against the element definitions of a Registry."""

    def __init__(self, registry: Registry, lookups: set[str] | None = None) -> None:
        self.registry = registry
        # When given, every element path looked up is recorded (used to strip the shipped data).
        self.lookups = lookups

    def compile(
        self, expression: str, context: str, resource_type: str | None = None
    ) -> tuple[Branch, ...]:
        """Branches of `expression` evaluated on a `context` (type or backbone path).

        `resource_type` is the type of `%resource` when `context` is a backbone path.
        """
        try:
            node = fp.parse(expression)
        except fp.FhirPathSyntaxError as exc:
            raise CompileError(str(exc)) from exc
        return self.node(node, (Branch(_identity, context, ()),), resource_type or context)

    def node(self, node: fp.Node, inputs: tuple[Branch, ...], root_type: str) -> tuple[Branch, ...]:
        if isinstance(node, fp.Union):
            out: list[Branch] = []
            for item in node.items:
                out.extend(self.node(item, inputs, root_type))
            return tuple(out)
        if isinstance(node, fp.Member):
            return self.member(node, inputs, root_type)
        if isinstance(node, fp.Call):
            return self.call(node, inputs, root_type)
        if isinstance(node, fp.Index):
            src = self.node(node.source, inputs, root_type)
            if len(src) > 1:
                raise CompileError("indexer over several types")
            return tuple(b.then(_slice(b.fn, node.index), b.type, None) for b in src)
        if isinstance(node, fp.TypeOp) and node.op == "as":
            return self.as_type(self.node(node.source, inputs, root_type), node.type_name)
        if isinstance(node, fp.Variable) and node.name == "resource":
            return (Branch(_root, root_type),)
        if isinstance(node, fp.Binary):
            return (Branch(_from_bool(self.boolean(node, inputs, root_type)), "boolean"),)
        raise CompileError(f"unsupported node {type(node).__name__}")

    def member(self, node: fp.Member, inputs: tuple[Branch, ...], root_type: str) -> tuple[Branch, ...]:
        if node.source is None and node.name[:1].isupper():
            return self.type_filter(node.name, inputs)
        sources = inputs if node.source is None else self.node(node.source, inputs, root_type)
        out: list[Branch] = []
        for branch in sources:
            out.extend(self.children(branch, node.name))
        return tuple(out)

    def type_filter(self, name: str, inputs: tuple[Branch, ...]) -> tuple[Branch, ...]:
        """A leading type name (`Patient.name`) keeps only inputs of that type."""
        if name not in self.registry.resource_types and name not in _ABSTRACT_ROOTS:
            raise CompileError(f"unknown type {name}")
        out = []
        for b in inputs:
            if b.type == name:
                out.append(b)
            elif name in _ABSTRACT_ROOTS and b.type in self.registry.resource_types:
                # Every resource is a Resource; DomainResource excludes Bundle/Binary/Parameters.
                if name == "Resource" or self.registry.resource_types[b.type] == "DomainResource":
                    out.append(Branch(b.fn, name, b.ops))
        return tuple(out)

    def element(self, path: str) -> tuple[str, ...] | None:
        if self.lookups is not None:
            self.lookups.add(path)
        return self.registry.elements.get(path)

    def children(self, branch: Branch, name: str) -> list[Branch]:
        path = f"{branch.type}.{name}"
        types = self.element(path)
        if types is not None:
            return [branch.then(_member(branch.fn, name), self.context_of(path, types[0]), ("member", name))]
        choice = self.element(path + "[x]")
        if choice is None:
            raise CompileError(f"unknown element {path}")
        out = []
        for t in choice:
            json_name = name + t[0].upper() + t[1:]  # value[x] as valueQuantity (json.html)
            out.append(branch.then(_member(branch.fn, json_name), self.context_of(path, t), ("member", json_name)))
        return out

    @staticmethod
    def context_of(path: str, type_name: str) -> str:
        if type_name in _BACKBONE:
            return path
        if type_name.startswith("#"):
            return type_name[1:]
        return type_name

    def as_type(self, branches: tuple[Branch, ...], type_name: str) -> tuple[Branch, ...]:
        wanted = type_name[0].lower() + type_name[1:] if type_name in _SYSTEM_TYPES else type_name
        return tuple(b for b in branches if self.registry.is_subtype(b.type, wanted))

    def call(self, node: fp.Call, inputs: tuple[Branch, ...], root_type: str) -> tuple[Branch, ...]:
        if node.name in ("exists",):
            return (Branch(_from_bool(self.boolean(node, inputs, root_type)), "boolean"),)
        sources = inputs if node.source is None else self.node(node.source, inputs, root_type)
        if node.name in ("as", "ofType"):
            (arg,) = node.args
            assert isinstance(arg, fp.Literal) and isinstance(arg.value, str)
            return self.as_type(sources, arg.value)
        if node.name == "first" and not node.args:
            if len(sources) > 1:
                raise CompileError("first() over several types")
            return tuple(b.then(_slice(b.fn, 0), b.type, None) for b in sources)
        if node.name == "where" and len(node.args) == 1:
            return tuple(self.where(b, node.args[0], root_type) for b in sources)
        if node.name == "extension" and len(node.args) == 1:
            # FHIR's extension(url) is extension.where(url = url) (fhirpath.html#functions).
            (url,) = node.args
            if not isinstance(url, fp.Literal) or not isinstance(url.value, str):
                raise CompileError("extension() takes a string literal")
            return tuple(
                b.then(_where_equals(b.fn, "url", url.value), b.type, ("eq", "url", url.value))
                for source in sources for b in self.children(source, "extension")
            )
        raise CompileError(f"function {node.name}() not supported")

    def where(self, branch: Branch, cond: fp.Node, root_type: str) -> Branch:
        if (
            isinstance(cond, fp.TypeOp)
            and cond.op == "is"
            and isinstance(cond.source, fp.Call)
            and cond.source.name == "resolve"
            and cond.source.source is None
            and branch.type == "Reference"
        ):
            return branch.then(_where_resolve_is(branch.fn, cond.type_name), branch.type, ("resolve", cond.type_name))
        if (
            isinstance(cond, fp.Binary)
            and cond.op == "="
            and isinstance(cond.left, fp.Member)
            and cond.left.source is None
            and isinstance(cond.right, fp.Literal)
            and isinstance(cond.right.value, str)
        ):
            child = self.children(branch, cond.left.name)
            if len(child) != 1 or child[0].type not in _STRING_LIKE:
                raise CompileError(f"where() on {branch.type}.{cond.left.name}")
            op = ("eq", cond.left.name, cond.right.value)
            return branch.then(_where_equals(branch.fn, cond.left.name, cond.right.value), branch.type, op)
        test = self.boolean(cond, (Branch(_identity, branch.type, ()),), root_type)
        return branch.then(_where_true(branch.fn, test), branch.type, None)

    def boolean(self, node: fp.Node, inputs: tuple[Branch, ...], root_type: str) -> BoolFn:
        """Three-valued FHIRPath logic (None is the empty collection)."""
        if isinstance(node, fp.Call) and node.name == "exists" and not node.args:
            src = self.node(node.source, inputs, root_type) if node.source else inputs
            fns = [b.fn for b in src]
            return lambda items, root: any(fn(items, root) for fn in fns)
        if isinstance(node, fp.Binary) and node.op == "and":
            left = self.boolean(node.left, inputs, root_type)
            right = self.boolean(node.right, inputs, root_type)
            return lambda items, root: _and(left(items, root), right(items, root))
        if isinstance(node, fp.Binary) and node.op in ("=", "!=") and isinstance(node.right, fp.Literal):
            src = self.node(node.left, inputs, root_type)
            literal, negate = node.right.value, node.op == "!="

            def compare(items: list[Any], root: dict[str, Any]) -> bool | None:
                values = [v for b in src for v in b.fn(items, root)]
                if not values:
                    return None
                # Collection equality: same length and pairwise equal; a dateTime never equals
                # a boolean, so `deceased != false` is true for deceasedDateTime.
                equal = len(values) == 1 and type(values[0]) is type(literal) and values[0] == literal
                return equal != negate

            return compare
        if isinstance(node, fp.Binary) and node.op == "in":
            return self.membership(node, inputs, root_type)
        raise CompileError("unsupported boolean expression")

    def membership(self, node: fp.Binary, inputs: tuple[Branch, ...], root_type: str) -> BoolFn:
        """`x in ('a' | 'b')`: empty when x is, else whether x equals one of the literals."""
        literals = node.right.items if isinstance(node.right, fp.Union) else (node.right,)
        if not all(isinstance(item, fp.Literal) for item in literals):
            raise CompileError("in: only a list of literals on the right")
        src = self.node(node.left, inputs, root_type)
        allowed = [item.value for item in literals if isinstance(item, fp.Literal)]

        def test(items: list[Any], root: dict[str, Any]) -> bool | None:
            values = [v for b in src for v in b.fn(items, root)]
            if not values:
                return None
            if len(values) > 1:
                # FHIRPath makes this an error; as a where() condition it keeps the item out,
                # so that one odd element cannot fail the indexing of a whole write.
                return None
            value = values[0]
            return any(type(value) is type(literal) and value == literal for literal in allowed)

        return test


def _and(left: bool | None, right: bool | None) -> bool | None:
    if left is False or right is False:
        return False
    if left is None or right is None:
        return None
    return True


# FHIRPath System types written with a capital (`value.as(DateTime)` in Observation-code-value-date).
_SYSTEM_TYPES = frozenset({"DateTime", "Date", "Time", "String", "Boolean", "Integer", "Decimal"})
_STRING_LIKE = frozenset({"string", "code", "uri", "id", "canonical", "url", "oid", "uuid", "markdown"})
