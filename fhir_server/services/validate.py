"""`$validate` (FHIR R4 resource-operation-validate, operation-resource-validate.html):
`POST [base]/[Type]/$validate` and `[Type]/[id]/$validate`.

The resource is checked by the same code as a write (`crud.resource_issues`), so a resource
that a create or update refuses with 422 gets 200 here with the same issues. What a write
answers 400 (not a resource of that type) is 400 here too; a `profile` we do not hold is 400.
"""

from __future__ import annotations

from typing import Any, Final

from ..model import profiles
from ..model.errors import Issue, Kind, fail
from ..model.outcome import operation_outcome
from .context import Context, Payload
from .crud import check_body_id, check_id, check_type, read, resource_issues
from .guard import decision

MODES: Final = ("create", "update", "delete", "profile")


def _parameters(body: dict[str, Any], resource_type: str) -> dict[str, Any] | None:
    """`resource`, `mode` and `profile` of a Parameters body, or None when the body is the
    resource itself."""
    if body.get("resourceType") != "Parameters":
        return None
    parameters = body.get("parameter")
    parameters = [p for p in parameters if isinstance(p, dict)] if isinstance(parameters, list) else []
    if resource_type == "Parameters" and not any(p.get("name") == "resource" for p in parameters):
        return None  # a Parameters resource to validate, sent as itself
    found: dict[str, Any] = {}
    for p in parameters:
        name = p.get("name")
        if name == "resource":
            found["resource"] = p.get("resource")
        elif name in ("mode", "profile"):
            found[name] = next((v for k, v in p.items() if k.startswith("value")), None)
        else:
            raise fail(Kind.INVALID, "not-supported", f"Unknown $validate parameter {name!r}: "
                       "expected resource, mode or profile", expression="Parameters.parameter")
    return found


def _one(name: str, values: list[str]) -> str | None:
    if len(values) > 1:
        raise fail(Kind.INVALID, "invalid", f"$validate takes one {name}, found {len(values)}")
    return values[0] if values else None


async def validate(
    ctx: Context, resource_type: str, id: str | None, body: dict[str, Any] | None,
    query: list[tuple[str, str]],
) -> dict[str, Any]:
    """The OperationOutcome of `$validate`: every issue, or one `informational` when none."""
    check_type(resource_type)
    if id is not None:
        check_id(id)
    decision(ctx, "operation", resource_type)
    given = _parameters(body, resource_type) if body is not None else None
    resource = (given or {}).get("resource", None if given is not None else body)
    mode = (given or {}).get("mode") or _one("mode", [v for k, v in query if k == "mode"])
    profile = (given or {}).get("profile") or _one("profile", [v for k, v in query if k == "profile"])
    if mode is not None and mode not in MODES:
        raise fail(Kind.INVALID, "value", f"Unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    if profile is not None and (not isinstance(profile, str) or profiles.find(profile) is None):
        raise fail(Kind.INVALID, "not-supported", f"Profile {profile} is not known to this "
                   f"server; it holds {', '.join(profiles.held())}", details_code="MSG_NO_MATCH")
    if mode in ("update", "delete"):
        if id is None:
            raise fail(Kind.INVALID, "required", f"mode={mode} validates against a stored "
                       f"resource: POST [base]/{resource_type}/[id]/$validate")
        await read(ctx, resource_type, id)  # 404 / 410 as the write would answer
    if mode == "delete":
        decision(ctx, "delete", resource_type)
        return _outcome([], f"{resource_type}/{id} may be deleted")
    if resource is None:
        raise fail(Kind.INVALID, "required", "$validate needs the resource to validate")
    if mode == "update" and id is not None:
        check_body_id(resource_type, id, Payload(resource, resource))
    found = resource_issues(ctx, resource_type, resource, (profile,) if profile else ())
    return _outcome(found, "No issues found")


def _outcome(found: list[Issue], message: str) -> dict[str, Any]:
    if not found:
        found = [Issue(code="informational", diagnostics=message, severity="information")]
    return operation_outcome(found)
