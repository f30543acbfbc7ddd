"""What a client may be granted: the requested scopes it is registered for, no more."""

from __future__ import annotations

from ..access import Grant, parse_scopes


def narrow_scope(allowed: str, requested: str) -> str:
    """The part of `requested` that `allowed` (a client's registered scope) covers, as a scope
    string; "" when nothing is left. Backend clients get `system/` scopes only."""
    registered: Grant = parse_scopes(allowed)
    granted = registered.narrow(parse_scopes(requested))
    system = Grant(tuple(s for s in granted.scopes if s.level == "system"))
    return system.text()
