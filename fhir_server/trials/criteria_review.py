"""Drafted eligibility, checked by a person (docs/matching.md, "Drafting criteria").

- `draft` (`POST ResearchStudy/{id}/$draft-criteria`): the study's free-text criteria (the
  `text` parameter, else the wording of its ECLAIRE enrollment Group's characteristics) go
  through the rule-based drafter (drafting.py) into a new eligibility Group whose
  `eligibility-review` extension says `draft`, for that study. It is not referenced from the
  study's `enrollment`, so matching never reads it.
- `approve` (`POST Group/{id}/$approve-criteria`): a person (a user, not a system client)
  approves a draft, as it stands or as they edited it (a normal update of the Group first):
  the review becomes `approved`, `by` them, `at` now, and the study's `enrollment` gains the
  Group, in one unit of work; from then on matching reads it.
- The review extension is the server's: a client's write that sets or changes it is refused
  (422, services/platform_rules.py), except that editing an approved Group's criteria must
  set it back to `draft` (same study, no `by` nor `at`): matching stops reading the Group
  until a person approves it again.

Drafting is for the catalogue's curators: a platform administrator or a system client (no
patient in context) whose scopes allow creating Groups; approving for a person, an
administrator's account (scopes allowing updates of Group and ResearchStudy). The server
writes both (as for the catalogue's loads), on the request's audit trail.
"""

from __future__ import annotations

from typing import Any

import orjson

from .. import clock
from ..model import platform_codes as codes
from ..model.errors import Kind, fail
from ..services import crud, platform_rules, server_writes
from ..services.context import Context, Payload
from ..services.guard import decision, hidden
from ..model.ids import new_id
from ..services.server_writes import ServerWrite, as_server
from ..store.base import Version
from . import match_parameters
from .drafting import characteristic, draft as drafted
from .eligibility_codes import PROFILE
from .eligibility_format import is_eligibility_group

REVIEW_URL = codes.ELIGIBILITY_REVIEW
DRAFT, APPROVED = "draft", "approved"
MAX_TEXT = 100_000


def review(group: dict[str, Any]) -> dict[str, Any]:
    """The review parts of a Group (`status`, `study`, `by`, `at`) by name; {} if none."""
    return platform_rules.review_parts(group)


def is_draft(group: dict[str, Any]) -> bool:
    """Whether a Group is a drafted one no person has approved yet."""
    found = review(group)
    return bool(found) and found.get("status") != APPROVED


def _curator(ctx: Context, *interactions: tuple[str, str]) -> None:
    """FORBIDDEN unless the caller curates the catalogue: a platform administrator or a system
    client (no patient in context), with scopes for `interactions`."""
    principal = ctx.principal
    if principal is None or not (principal.admin or not principal.confined):
        raise fail(Kind.FORBIDDEN, "forbidden", "Eligibility criteria are curated by the platform's "
                   "administrators and catalogue systems.")
    for interaction, resource_type in interactions:
        decision(ctx, interaction, resource_type)  # type: ignore[arg-type]


def _free_text(ctx_groups: list[dict[str, Any]]) -> str:
    """The wording of the criteria an ECLAIRE enrollment Group holds (exclusions last)."""
    lines: dict[bool, list[str]] = {False: [], True: []}
    for group in ctx_groups:
        for found in group.get("characteristic", []):
            text = (found.get("valueCodeableConcept") or {}).get("text") or (found.get("code") or {}).get("text")
            if isinstance(text, str) and text.strip():
                lines[bool(found.get("exclude"))].append(text)
    return "\n".join([*lines[False], *(["Exclusion criteria:", *lines[True]] if lines[True] else [])])


async def draft(ctx: Context, study_id: str, body: dict[str, Any]) -> Version:
    """`$draft-criteria`: the draft Group stored."""
    _curator(ctx, ("create", "Group"))
    if body.get("resourceType") != "Parameters":
        raise match_parameters.invalid("resourceType", "the body is a Parameters resource")
    crud.check_resource(ctx, "Parameters", Payload(body, body))
    texts = []
    for parameter in body.get("parameter", []):
        if parameter.get("name") != "text" or texts:
            raise match_parameters.invalid(str(parameter.get("name")), "$draft-criteria takes one 'text' at most")
        texts.append(parameter.get("valueString"))
    if texts and (not isinstance(texts[0], str) or not texts[0].strip() or len(texts[0]) > MAX_TEXT):
        raise match_parameters.invalid("text", f"a valueString of 1 to {MAX_TEXT} characters")
    study = orjson.loads((await crud.read(as_server(ctx), "ResearchStudy", study_id)).body or b"{}")
    text = texts[0] if texts else _free_text(await _enrolled(ctx, study))
    criteria = drafted(text)
    if not criteria:
        raise match_parameters.unprocessable("text", "the study has no free-text criteria to draft from "
                                             "(give them in 'text')")
    group = {"resourceType": "Group", "meta": {"profile": [PROFILE]},
             "extension": [{"url": REVIEW_URL, "extension": [
                 {"url": "status", "valueCode": DRAFT},
                 {"url": "study", "valueReference": {"reference": f"ResearchStudy/{study_id}"}}]}],
             "type": "person", "actual": False, "name": f"Drafted eligibility of ResearchStudy/{study_id}",
             "characteristic": [characteristic(c) for c in criteria]}
    return (await server_writes.commit(ctx, [ServerWrite({**group, "id": new_id()})]))[0]


def _claims(resource: dict[str, Any]) -> dict[str, Any]:
    """Its meta without what the store sets (versionId, lastUpdated): profiles, tags kept."""
    return {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}


async def _enrolled(ctx: Context, study: dict[str, Any]) -> list[dict[str, Any]]:
    groups = []
    for reference in study.get("enrollment", []):
        kind, _, id = (reference.get("reference") or "").partition("/")
        if kind == "Group" and id:
            found = await ctx.store.read("Group", id)
            group = orjson.loads(found.body) if found is not None and found.body is not None else None
            if group is not None and not is_eligibility_group(group):  # ECLAIRE's own, as published
                groups.append(group)
    return groups


async def approve(ctx: Context, group_id: str) -> Version:
    """`$approve-criteria`: the Group approved and enrolled (module docstring)."""
    _curator(ctx, ("update", "Group"), ("update", "ResearchStudy"))
    principal = ctx.principal
    person = principal.fhir_user if principal is not None and principal.admin else None
    if person is None:
        raise fail(Kind.FORBIDDEN, "forbidden", "A person approves drafted criteria: a platform "
                   "administrator's account, not a system client.")
    crud.check_id(group_id)
    server = as_server(ctx)
    stored = await crud.read(server, "Group", group_id)
    group = orjson.loads(stored.body or b"{}")
    parts = review(group)
    study_ref = (parts.get("study") or {}).get("reference", "")
    if not parts or not study_ref.startswith("ResearchStudy/"):
        raise hidden("Group", group_id)  # not a drafted Group: nothing to approve here
    if parts.get("status") == APPROVED:
        raise fail(Kind.CONFLICT, "conflict", f"Group/{group_id} is already approved.")
    study_version = await crud.read(server, "ResearchStudy", study_ref.removeprefix("ResearchStudy/"))
    study = orjson.loads(study_version.body or b"{}")
    group["extension"] = [e for e in group.get("extension", []) if e.get("url") != REVIEW_URL] + [
        {"url": REVIEW_URL, "extension": [
            {"url": "status", "valueCode": APPROVED}, {"url": "study", "valueReference": {"reference": study_ref}},
            {"url": "by", "valueReference": {"reference": person}}, {"url": "at", "valueDateTime": clock.instant()}]}]
    for resource in (group, study):
        claims = _claims(resource)
        resource.pop("meta", None)
        if claims:
            resource["meta"] = claims
    enrolled = {e.get("reference") for e in study.get("enrollment", [])}
    if f"Group/{group_id}" not in enrolled:  # still enrolled if approved before, then edited
        study["enrollment"] = [*study.get("enrollment", []), {"reference": f"Group/{group_id}"}]
    versions = await server_writes.commit(ctx, [ServerWrite(group, new=False, if_match=stored.version),
                                                ServerWrite(study, new=False, if_match=study_version.version)])
    return versions[0]

