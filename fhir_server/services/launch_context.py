"""The patients a practitioner may reach: those whose active privacy Consent names them as an
actor with a permit provision in force today, the rule by which referring physicians reach
records. It feeds the SMART patient picker and the access policy of `user/` scopes. The
lookup runs as the server itself: it decides what the user may reach, it is not the user's
request.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import orjson

from ..access.principal import server_principal
from ..search import parse_query
from .context import Context

PRIVACY = "http://terminology.hl7.org/CodeSystem/consentscope|patient-privacy"
MOST = 1000  # consents looked at, at most (a larger practice needs paging: not built)


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    """A patient to offer: its id and how to show it."""

    id: str
    label: str


def _in_force(provision: dict[str, Any], today: str) -> bool:
    period = provision.get("period") or {}
    start, end = period.get("start", ""), period.get("end", "")
    return provision.get("type") == "permit" and start[:10] <= today and (not end or today <= end[:10])


def _label(patient: dict[str, Any]) -> str:
    names = patient.get("name") or [{}]
    name = names[0]
    text = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
    born = patient.get("birthDate")
    return f"{text or patient['id']} ({born})" if born else (text or patient["id"])


async def consenting_patients(ctx: Context, practitioner: str) -> list[str]:
    """Ids of the patients `practitioner` (`Practitioner/<id>`) may reach, consent in force."""
    ctx = dataclasses.replace(ctx, principal=server_principal("consent-lookup"))
    query, _ = parse_query("Consent", [("actor", practitioner), ("status", "active"),
                                       ("scope", PRIVACY), ("_count", str(MOST))], ctx.registry)
    page = await ctx.store.search(query)
    today = datetime.now(UTC).date().isoformat()
    ids: list[str] = []
    for version in page.matches:
        consent = orjson.loads(version.body or b"{}")
        provision = consent.get("provision") or {}
        actors = {a.get("reference", {}).get("reference") for a in provision.get("actor", [])}
        reference = (consent.get("patient") or {}).get("reference", "")
        if practitioner in actors and _in_force(provision, today) and reference.startswith("Patient/"):
            ids.append(reference.removeprefix("Patient/"))
    return list(dict.fromkeys(ids))


async def patients_for(ctx: Context, practitioner: str) -> list[Choice]:
    """The patients `practitioner` may open, by name (the picker)."""
    choices = []
    for id in await consenting_patients(ctx, practitioner):
        found = await ctx.store.read("Patient", id)
        if found is not None and found.body is not None:
            choices.append(Choice(id, _label(orjson.loads(found.body))))
    return sorted(choices, key=lambda c: c.label)
