"""Access decisions for every interaction, from the caller's SMART scopes (deny by default).

- `system/` scopes (backend services) reach every resource of the types they name.
- `patient/` scopes reach the launch patient's compartment only (compartmentdefinition-patient);
  types outside any patient compartment (Practitioner, ResearchStudy, ...) are not patient data
  and are reached as named. Searches are confined *inside the query* (the compartment clause is
  ANDed to it before paging), so nothing of another patient can come back, through `_include`
  either: included resources pass `may_see` one by one.
- `user/` scopes of a practitioner reach the compartments of the patients whose privacy
  Consent in force names them (services/launch_context.py finds them for each request, so a
  withdrawn consent takes effect at once); other users' `user/` scopes grant nothing yet.
- Granular scopes (`patient/Observation.rs?category=laboratory`) add their search parameters to
  the query, or are checked against the resource.

Failures are FORBIDDEN (403) with an OperationOutcome naming what was missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..model.errors import Kind, fail
from ..search import Clause, Query, ReferencePredicate, Registry, TokenPredicate, extract, matches
from ..search import parse_query
from .principal import Principal
from .scopes import Interaction, Restriction

_WRITES = frozenset({"create", "update", "patch", "delete"})


def compartment_clause(registry: Registry, resource_type: str, patient_id: str) -> Clause | None:
    """Membership of `resource_type` in Patient/`patient_id`'s compartment; None when the type
    is in no patient compartment."""
    codes = registry.patient_compartment(resource_type)
    predicates: list[Any] = [ReferencePredicate(code, "Patient", patient_id) for code in codes]
    if resource_type == "Patient":
        predicates.append(TokenPredicate("_id", None, patient_id))
    return Clause(tuple(predicates)) if predicates else None


def _denied(principal: Principal | None, interaction: str, resource_type: str | None) -> Exception:
    what = resource_type or "all types"
    if principal is None:
        return fail(Kind.FORBIDDEN, "forbidden", "No authenticated caller.")
    return fail(Kind.FORBIDDEN, "forbidden",
                f"The access token's scopes do not permit {interaction} on {what}.",
                details_code="MSG_AUTH_REQUIRED")


class Decision:
    """How a principal may perform one interaction on one type: the clauses to add to a query
    (none: unrestricted), for searches and for checking single resources alike."""

    def __init__(self, clauses: tuple[Clause, ...]) -> None:
        self.clauses = clauses

    def confine(self, query: Query) -> Query:
        """`query` restricted to what the principal may see."""
        return query.restrict(*self.clauses) if self.clauses else query

    def admits(self, resource_type: str, resource: dict[str, Any]) -> bool:
        """Whether `resource` lies inside what the principal may reach."""
        if not self.clauses:
            return True
        entries = extract(resource)
        query = Query(resource_type, self.clauses)
        return matches(query, entries, resource_type=resource_type)


def decide(principal: Principal | None, registry: Registry, interaction: Interaction,
           resource_type: str | None, *, instance: bool = False) -> Decision:
    """The Decision for `interaction` on `resource_type` (None: all types), or FORBIDDEN."""
    if principal is None:
        raise _denied(principal, interaction, resource_type)
    if resource_type == "AuditEvent" and interaction in _WRITES:
        raise fail(Kind.FORBIDDEN, "forbidden",
                   "The audit trail is append-only and written by the server alone.")
    grant = principal.grant
    type_name = resource_type or "*"
    system = grant.restrictions(interaction, type_name, ("system",), instance=instance)
    if system is None:
        return Decision(())
    if system:
        return Decision(_restriction_clauses(registry, resource_type, system, principal, interaction))
    if principal.patient is not None and resource_type is not None:
        patient = grant.restrictions(interaction, resource_type, ("patient",), instance=instance)
        if patient is not None and not patient:
            raise _denied(principal, interaction, resource_type)
        compartment = compartment_clause(registry, resource_type, principal.patient)
        clauses: tuple[Clause, ...] = (compartment,) if compartment is not None else ()
        if patient:
            clauses += _restriction_clauses(registry, resource_type, patient, principal, interaction)
        return Decision(clauses)
    if principal.consented is not None and resource_type is not None:
        user = grant.restrictions(interaction, resource_type, ("user",), instance=instance)
        if user is not None and not user:
            raise _denied(principal, interaction, resource_type)
        reach = _compartments(registry, resource_type, principal.consented)
        clauses = (reach,) if reach is not None else ()
        if user:
            clauses += _restriction_clauses(registry, resource_type, user, principal, interaction)
        return Decision(clauses)
    raise _denied(principal, interaction, resource_type)


def _compartments(registry: Registry, resource_type: str, patients: Sequence[str]) -> Clause | None:
    """Membership of any of these patients' compartments (an empty clause matches nothing);
    None when the type is in no patient compartment."""
    if not registry.patient_compartment(resource_type) and resource_type != "Patient":
        return None
    clauses = [compartment_clause(registry, resource_type, id) for id in patients]
    return Clause(tuple(p for c in clauses if c is not None for p in c.any_of))


def _restriction_clauses(registry: Registry, resource_type: str | None,
                         restrictions: Sequence[Restriction], principal: Principal,
                         interaction: str) -> tuple[Clause, ...]:
    """The clauses of granular scopes. One restriction's parameters AND together; several
    restrictions OR together, which a Query can say only when each is one value of the same
    parameter (joined as `name=a,b`)."""
    if len(restrictions) == 1:
        pairs = list(restrictions[0])
    else:
        names = {r[0][0] for r in restrictions if len(r) == 1}
        if len(names) != 1 or any(len(r) != 1 for r in restrictions):
            raise fail(Kind.FORBIDDEN, "forbidden",
                       f"The granular scopes for {resource_type} cannot be combined into one "
                       "search; ask for one of them.")
        pairs = [(names.pop(), ",".join(r[0][1] for r in restrictions))]
    query, issues = parse_query(resource_type, pairs, registry)
    if issues or resource_type is None:
        raise _denied(principal, interaction, resource_type)
    return query.clauses
