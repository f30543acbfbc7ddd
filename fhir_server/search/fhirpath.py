"""A parser for the FHIRPath subset used by the R4 search parameter expressions.

FHIRPath (http://hl7.org/fhirpath/N1/) is big; SearchParameter.expression in R4 uses a small
part of it: member paths, `|`, `where(...)`, `as`/`ofType`/`.as()`, `is`, `resolve()`,
`exists()`, `first()`, `extension(url)`, `[n]`, `=`/`!=`, `in`, `and`, string/boolean literals
and `%resource`.
This module turns such text into a tiny AST; `compile.py` turns the AST into Python closures.
Anything outside the subset raises `FhirPathSyntaxError`, which makes the caller fall back to
the full engine (fhirpathpy).

Precedence follows FHIRPath §6 (high to low): `.` / `[]`, `|`, `is`/`as`, `=`/`!=`, `in`, `and`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class FhirPathSyntaxError(ValueError):
    """The expression is outside the supported subset (or malformed)."""


@dataclass(frozen=True, slots=True)
class Member:
    """`source.name` (source None: the input context)."""

    source: Node | None
    name: str


@dataclass(frozen=True, slots=True)
class Call:
    """`source.name(args)` (source None: a function applied to the input context)."""

    source: Node | None
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Index:
    source: Node
    index: int


@dataclass(frozen=True, slots=True)
class Union:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class TypeOp:
    """`expr is T` / `expr as T`."""

    op: str
    source: Node
    type_name: str


@dataclass(frozen=True, slots=True)
class Binary:
    """`=`, `!=`, `in` and `and`."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Literal:
    value: str | bool | int


@dataclass(frozen=True, slots=True)
class Variable:
    name: str


Node = Member | Call | Index | Union | TypeOp | Binary | Literal | Variable

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+)|(?P<var>%[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>!=|[.()\[\]|=,]))"
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise FhirPathSyntaxError(f"unexpected text at {pos}: {text[pos:pos + 10]!r}")
        kind = m.lastgroup
        assert kind is not None
        tokens.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise FhirPathSyntaxError(f"expected {value!r}, got {tok!r}")
        self.pos += 1
        return tok

    def at(self, value: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] == value and tok[0] in ("op", "id")

    def expression(self) -> Node:
        node = self.membership()
        while self.at("and"):
            self.take()
            node = Binary("and", node, self.membership())
        if self.at("or") or self.at("xor") or self.at("implies"):
            raise FhirPathSyntaxError(f"operator {self.peek()} not supported")
        return node

    def membership(self) -> Node:
        node = self.equality()
        if self.at("in"):
            self.take()
            node = Binary("in", node, self.equality())
        elif self.at("contains"):
            raise FhirPathSyntaxError("operator contains not supported")
        return node

    def equality(self) -> Node:
        node = self.type_expression()
        if self.at("=") or self.at("!="):
            op = self.take()[1]
            node = Binary(op, node, self.type_expression())
        return node

    def type_expression(self) -> Node:
        node = self.union()
        if self.at("is") or self.at("as"):
            op = self.take()[1]
            node = TypeOp(op, node, self.type_name())
        return node

    def type_name(self) -> str:
        kind, name = self.take()
        if kind != "id":
            raise FhirPathSyntaxError(f"type name expected, got {name!r}")
        if self.at("."):  # qualified name such as FHIR.Patient or System.String
            self.take(".")
            name = self.take()[1]
        return name

    def union(self) -> Node:
        items = [self.term()]
        while self.at("|"):
            self.take()
            items.append(self.term())
        return items[0] if len(items) == 1 else Union(tuple(items))

    def term(self) -> Node:
        node = self.primary()
        while True:
            if self.at("."):
                self.take()
                node = self.invocation(node)
            elif self.at("["):
                self.take()
                kind, num = self.take()
                if kind != "num":
                    raise FhirPathSyntaxError("only integer indexers are supported")
                self.take("]")
                node = Index(node, int(num))
            else:
                return node

    def primary(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise FhirPathSyntaxError("unexpected end of expression")
        kind, value = tok
        if value == "(" and kind == "op":
            self.take()
            node = self.expression()
            self.take(")")
            return node
        if kind == "str":
            self.take()
            return Literal(re.sub(r"\\(.)", r"\1", value[1:-1]))
        if kind == "num":
            self.take()
            return Literal(int(value))
        if kind == "var":
            self.take()
            return Variable(value[1:])
        if kind == "id":
            if value in ("true", "false"):
                self.take()
                return Literal(value == "true")
            return self.invocation(None)
        raise FhirPathSyntaxError(f"unexpected token {value!r}")

    def invocation(self, source: Node | None) -> Node:
        kind, name = self.take()
        if kind != "id":
            raise FhirPathSyntaxError(f"identifier expected, got {name!r}")
        if not self.at("("):
            return Member(source, name)
        self.take("(")
        args: list[Node] = []
        if name in ("as", "ofType", "is"):
            args.append(Literal(self.type_name()))
        elif not self.at(")"):
            args.append(self.expression())
            while self.at(","):
                self.take()
                args.append(self.expression())
        self.take(")")
        return Call(source, name, tuple(args))


def parse(text: str) -> Node:
    """Parse a FHIRPath expression of the supported subset."""
    parser = _Parser(text)
    node = parser.expression()
    if parser.peek() is not None:
        raise FhirPathSyntaxError(f"unexpected token {parser.peek()!r}")
    return node
