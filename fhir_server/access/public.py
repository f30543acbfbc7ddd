"""What a caller without an access token reaches: the trial catalogue, for patients and the
public looking for a trial (issue 17 §3b; docs/auth.md, "Without a token").

Reads and searches of ResearchStudy, and, only as `_include`/`_revinclude` results of such a
search, the catalogue resources the ECLAIRE queries include (sites, sponsors and other
parties, the eligibility Group) when they belong to no patient compartment. Everything else
is refused as it would be without this: 401, an access token is required. So is an
`:iterate` include: from a trial's sites it would reach every PractitionerRole working there
and their Practitioners (the people at each site and how to reach them), which no trial
publishes.
"""

from __future__ import annotations

from ..model.errors import Kind, fail
from ..search import Clause, Query, TokenPredicate
from .principal import Principal, Role
from .scopes import Interaction, parse_scopes

TOKEN_REQUIRED = ("An access token is required (Authorization: Bearer <token>); see "
                  "[base]/.well-known/smart-configuration.")
# The targets of ResearchStudy's `site`, `sponsor`, `associated-party` and `enrollment`.
INCLUDED_TYPES = frozenset({"Location", "Organization", "Practitioner", "PractitionerRole", "Group"})
# A Group with members lies in their compartments; R4's grp-1 lets only an actual Group have
# members, so a definitional one (an eligibility Group) holds no one.
_NO_MEMBERS = Clause((TokenPredicate("actual", None, "false"),))


def public_principal() -> Principal:
    """The caller of a request without an Authorization header: no scopes at all."""
    return Principal(Role.PUBLIC, subject="anonymous", client_id="anonymous", grant=parse_scopes(""))


def token_required() -> Exception:
    return fail(Kind.UNAUTHORIZED, "login", TOKEN_REQUIRED)


def public_clauses(interaction: Interaction, resource_type: str | None, *,
                   included: bool) -> tuple[Clause, ...]:
    """The clauses confining a caller without a token, or UNAUTHORIZED (deny by default)."""
    if resource_type == "ResearchStudy" and interaction in ("read", "search"):
        return ()
    if included and interaction == "search" and resource_type in INCLUDED_TYPES:
        return (_NO_MEMBERS,) if resource_type == "Group" else ()
    raise token_required()


def check_public_query(query: Query) -> None:
    """UNAUTHORIZED for an `:iterate` include or revinclude (the ECLAIRE queries use none):
    `_include=ResearchStudy:site&_revinclude:iterate=PractitionerRole:location` would list
    the people working at every site, which the public has no reason to walk to."""
    if any(spec.iterate for spec in (*query.include, *query.revinclude)):
        raise fail(Kind.UNAUTHORIZED, "login", "An :iterate _include or _revinclude needs an "
                   f"access token. {TOKEN_REQUIRED}")
