"""The patients a user may open in a SMART launch (the patient picker): a practitioner those
whose consent in force names them, a representative those they legally represent, a
relative those who delegate to them (services/reach.py and relatives.py apply the rules)."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from .context import Context
from .reach import consenting_patients, represented
from .relatives import delegating


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    """A patient to offer: its id and how to show it."""

    id: str
    label: str


def _label(patient: dict[str, Any]) -> str:
    names = patient.get("name") or [{}]
    name = names[0]
    text = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
    born = patient.get("birthDate")
    return f"{text or patient['id']} ({born})" if born else (text or patient["id"])


async def openable(ctx: Context, fhir_user: str) -> list[str]:
    """Ids of the patients `fhir_user` may have in context: a patient themself, a
    practitioner those who consented, a representative those they represent, a relative
    those who delegate to them."""
    kind, _, id = fhir_user.partition("/")
    if kind == "Patient":
        return [id]
    if kind == "Practitioner":
        return await consenting_patients(ctx, fhir_user)
    if kind == "RelatedPerson":
        return await represented(ctx, fhir_user) or await delegating(ctx, fhir_user)
    return []


async def patients_for(ctx: Context, fhir_user: str) -> list[Choice]:
    """The patients `fhir_user` may open, by name (the picker)."""
    choices = []
    for id in await openable(ctx, fhir_user):
        found = await ctx.store.read("Patient", id)
        if found is not None and found.body is not None:
            choices.append(Choice(id, _label(orjson.loads(found.body))))
    return sorted(choices, key=lambda c: c.label)
