"""Generate one straight-line Python function per resource type from its extraction steps.

Closures chained per FHIRPath step cost a call and a list per step and per parameter; a
resource type has 50-150 branches (every choice type is one). Here the branches whose
`ops` are plain item steps are merged into a trie (`subject` is walked once for both
`subject` and `patient`; `meta` once for `_tag`, `_profile`, ...) and emitted as nested
loops, the way fastjsonschema or dataclasses generate code; the rest (indexers, `first()`,
booleans, fallbacks) are called as closures. The generated source is kept on the function
(`__source__`) for debugging.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .compile import Fn, Op
from .references import reference_type

Indexer = Callable[[str, Any, list[Any]], None]
Extract = Callable[[dict[str, Any], list[Any]], None]


@dataclass(frozen=True, slots=True)
class Step:
    """Index the values `ops` (or, when None, `fn`) finds with `index` under `code`.

    `with_root`: the indexer takes `(value, resource)` pairs (composites read `%resource`).
    `needs`: groups of properties; the value must hold one of each group (a composite's
    components) or the indexer would find nothing, so it is not called.
    """

    code: str
    index: Indexer
    ops: tuple[Op, ...] | None
    fn: Fn
    with_root: bool = False
    needs: tuple[tuple[str, ...], ...] = ()


@dataclass
class _Node:
    children: dict[Op, _Node] = field(default_factory=dict)
    leaves: list[Step] = field(default_factory=list)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.env: dict[str, Any] = {"_rtype": reference_type}
        self._names: dict[int, str] = {}
        self._counter = 0

    def name(self, obj: Any, prefix: str) -> str:
        """A global name in the generated module for `obj` (functions, literals)."""
        key = id(obj)
        if key not in self._names:
            self._names[key] = f"{prefix}{len(self._names)}"
            self.env[self._names[key]] = obj
        return self._names[key]

    def var(self) -> str:
        self._counter += 1
        return f"v{self._counter}"

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)


def _leaf(w: _Writer, step: Step, depth: int, item: str) -> None:
    value = f"({item}, r)" if step.with_root else item
    if step.needs:
        groups = [" or ".join(f"{k!r} in {item}" for k in group) for group in step.needs]
        w.emit(depth, f"if {item}.__class__ is dict and ({') and ('.join(groups)}):")
        depth += 1
    w.emit(depth, f"{w.name(step.index, 'i')}({step.code!r}, {value}, out)")


def _node(w: _Writer, node: _Node, depth: int, item: str, is_dict: bool) -> None:
    for step in node.leaves:
        _leaf(w, step, depth, item)
    if not node.children:
        return
    if not is_dict:
        w.emit(depth, f"if {item}.__class__ is dict:")
        depth += 1
    for op, child in node.children.items():
        if op[0] == "member":
            value, each = w.var(), w.var()
            w.emit(depth, f"{value} = {item}.get({op[1]!r})")
            w.emit(depth, f"if {value} is not None:")
            w.emit(depth + 1, f"for {each} in ({value} if {value}.__class__ is list else ({value},)):")
            _node(w, child, depth + 2, each, False)
        elif op[0] == "resolve":
            w.emit(depth, f"if _rtype({item}) == {op[1]!r}:")
            _node(w, child, depth + 1, item, True)
        elif op[0] == "eq":
            w.emit(depth, f"if {item}.get({op[1]!r}) == {w.name(op[2], 'c')}:")
            _node(w, child, depth + 1, item, True)
        else:  # pragma: no cover - the compiler emits no other op
            raise ValueError(f"unknown op {op!r}")


def generate(name: str, steps: list[Step]) -> Extract:
    """A function `extract(resource, out)` appending the entries of every step to `out`."""
    root = _Node()
    opaque: list[Step] = []
    for step in steps:
        if step.ops is None:
            opaque.append(step)
            continue
        node = root
        for op in step.ops:
            node = node.children.setdefault(op, _Node())
        node.leaves.append(step)
    w = _Writer()
    w.emit(0, "def extract(r, out):")
    _node(w, root, 1, "r", True)
    if opaque:
        w.emit(1, "items = [r]")
        for step in opaque:
            each = w.var()
            w.emit(1, f"for {each} in {w.name(step.fn, 'g')}(items, r):")
            _leaf(w, step, 2, each)
    w.emit(1, "return None")
    source = "\n".join(w.lines) + "\n"
    exec(compile(source, f"<search extract {name}>", "exec"), w.env)
    fn: Extract = w.env["extract"]
    fn.__source__ = source  # type: ignore[attr-defined]
    return fn
