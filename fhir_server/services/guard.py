"""The access checks every service applies, from the caller's principal (access/policy.py).

Out of reach reads answer 404, as if the resource did not exist, so a caller cannot learn
what it may not see; writes of content out of reach answer 403.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..access import Interaction
from ..access.policy import Decision, decide
from ..model.errors import Kind, fail
from ..store.base import Version
from .context import Context


def decision(ctx: Context, interaction: Interaction, resource_type: str | None, *,
             instance: bool = False) -> Decision:
    """How the caller may do `interaction` on `resource_type`; FORBIDDEN if not at all."""
    return decide(ctx.principal, ctx.registry, interaction, resource_type, instance=instance)


def visible(d: Decision, version: Version) -> bool:
    """Whether a stored version lies within reach (a deletion only to unrestricted callers)."""
    if not d.clauses:
        return True
    if version.body is None:
        return False
    return d.admits(version.resource_type, orjson.loads(version.body))


def note(ctx: Context, version: Version | None, resource: dict[str, Any] | None = None) -> None:
    """Tell the request's audit trail a resource was read, returned or written."""
    if ctx.trail is not None:
        ctx.trail.touched(ctx.registry, version, resource)


def hidden(resource_type: str, id: str) -> Exception:
    return fail(Kind.NOT_FOUND, "not-found", f"{resource_type}/{id} is not known.",
                details_code="MSG_NO_EXIST")


def require_reach(d: Decision, resource_type: str, resource: dict[str, Any]) -> None:
    """FORBIDDEN unless the content written stays within reach (a patient's compartment)."""
    if not d.admits(resource_type, resource):
        raise fail(Kind.FORBIDDEN, "forbidden",
                   f"This {resource_type} would lie outside what the access token reaches.")
