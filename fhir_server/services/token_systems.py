"""A hint for token searches whose system is a ValueSet's URL, not a CodeSystem's (search.html
#token: `system` is a code system). ECLAIRE's own flux 2 example asks
`status=http://hl7.org/fhir/ValueSet/research-study-status|active`: it is matched as written
(no code has that system, so nothing matches) and the searchset carries a warning naming the
CodeSystem(s) the ValueSet draws from, so the client can correct it."""

from __future__ import annotations

from ..model.errors import Issue
from .context import Context


def value_set_systems(ctx: Context, resource_type: str | None, params: list[tuple[str, str]]) -> list[Issue]:
    """A warning for each token value of `params` whose system is a ValueSet we hold."""
    if ctx.terminology is None or resource_type is None:
        return []
    issues = []
    for name, value in params:
        param = ctx.registry.get(resource_type, name.partition(":")[0])
        if param is None or param.type != "token":
            continue
        for item in value.split(","):
            system, bar, _ = item.partition("|")
            value_set = ctx.terminology.resource("ValueSet", system) if bar and system else None
            if value_set is None:
                continue
            systems = sorted({part["system"] for part in (value_set.get("compose") or {}).get("include", ())
                              if isinstance(part.get("system"), str)})
            issues.append(Issue(
                "invalid", f"{system} is a ValueSet, not a code system: nothing has codes of that "
                f"system. The codes of this ValueSet have the system {' or '.join(systems) or '(none held)'};"
                f" {name}={item.partition('|')[2]} matches the code in any system.",
                severity="warning", expression=(name,)))
    return issues
