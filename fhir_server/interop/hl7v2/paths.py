"""Target paths of the mappings: where a value goes in a resource (mappings/README.md).

`a.b` a nested element; `a[]` appends to the list `a`; `a[2]` its third item (created as
needed); `extension(url)` the extension of `extension` with that url (created if absent),
`extension(url)[]` a new one with that url (a repeating field's values side by side).
A dict written where a dict is merges into it. Nothing is created but on the way to a value,
so a resource never holds an empty element."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_STEP = re.compile(r"([A-Za-z]+)(?:\(([^()]+)\))?(?:\[(\d*)\])?")


@lru_cache(maxsize=4096)  # the maps' target paths: a few hundred, each parsed once
def steps(path: str) -> tuple[tuple[str, str | None, str | None], ...]:
    """The steps of `path`: (name, extension url or None, index: '' to append, digits, None)."""
    found = []
    position = 0
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            raise ValueError(f"bad target path '{path}'")
        found.append((match[1], match[2], match[3]))
        position = match.end()
        if position < len(path):
            if path[position] != ".":
                raise ValueError(f"bad target path '{path}'")
            position += 1
    return tuple(found)


def put(resource: dict[str, Any], path: str, value: Any) -> None:
    """Write `value` at `path` in `resource`."""
    node: Any = resource
    route = steps(path)
    for number, (name, url, index) in enumerate(route):
        last = number == len(route) - 1
        if url is not None:
            items = node.setdefault(name, [])
            node = None if index == "" else next((e for e in items if e.get("url") == url), None)
            if node is None:
                node = {"url": url}
                items.append(node)
            if last:
                node.update(value)
            continue
        if index is None:
            if last:
                if isinstance(value, dict) and isinstance(node.get(name), dict):
                    node[name].update(value)
                else:
                    node[name] = value
            else:
                node = node.setdefault(name, {})
            continue
        items = node.setdefault(name, [])
        if index == "":
            if last:
                items.append(value)
                return
            items.append({})
            node = items[-1]
            continue
        while len(items) <= int(index):
            items.append({})
        if last:
            if isinstance(value, dict):
                items[int(index)].update(value)
            else:
                items[int(index)] = value
        else:
            node = items[int(index)]
