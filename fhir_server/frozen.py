"""Frozen slots dataclasses built at the cost of plain ones."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

_T = TypeVar("_T")


def fast_init(cls: type[_T]) -> type[_T]:
    """Replace a frozen slots dataclass's __init__ with one writing the slots directly.

    The generated frozen __init__ calls object.__setattr__ per field, about twice the cost
    (CPython 3.11); search extraction and the eligibility engine build such values by the
    million. Instances stay frozen: assignment after construction still raises
    FrozenInstanceError. It runs no __post_init__ and no default factory: for classes
    without them.
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if hasattr(cls, "__post_init__") or any(f.default_factory is not dataclasses.MISSING
                                            for f in fields):
        raise TypeError(f"{cls.__name__} has a __post_init__ or a default factory, "
                        "which fast_init would skip")
    namespace: dict[str, Any] = {f"_set_{f.name}": getattr(cls, f.name).__set__ for f in fields}
    args = ", ".join(
        f.name if f.default is dataclasses.MISSING else f"{f.name}={f.default!r}" for f in fields
    )
    body = "".join(f"    _set_{f.name}(self, {f.name})\n" for f in fields)
    exec(f"def __init__(self, {args}):\n{body}", namespace)
    cls.__init__ = namespace["__init__"]  # type: ignore[method-assign]
    return cls
