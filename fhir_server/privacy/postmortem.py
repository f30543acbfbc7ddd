"""Post-mortem directives: what a patient wants done with their data after their death
(docs/privacy.md, "Post-mortem directives"), applied by the retention run once the Patient is
marked deceased (`deceasedBoolean` true or a `deceasedDateTime`).

A directive is a Consent the patient writes: `scope` consentscope `adr` (advance directive),
`category` our `post-mortem-directive` code, `status` `active`, and `policyRule` one code of
our CodeSystem `post-mortem-directive`:
- `keep`: nothing changes; the record follows the patient-record rule;
- `erase`: the record is erased (as `$erase`), or pseudonymised when a legal hold stands;
- `communicate`: the person the provision names (`provision.actor.reference`, a RelatedPerson,
  role v3-ParticipationType `IRCP`) is sent a notice; the record then follows the
  patient-record rule. Only a RelatedPerson of the deceased (its `patient`) is: a notice of
  a death is not sent to another patient's relative, a practitioner or anyone else the
  directive's writer named.
The latest active directive counts; none means `keep`.

Nothing is done until the death has stood for `GRACE` (the Patient last updated that long
ago, still deceased): whoever may update a Patient (a system client, a practitioner of the
record) may mark it deceased, by mistake or to have a record erased, and an erasure cannot be
undone; in that time the mistake is corrected by updating the Patient, and every update
starts the wait again.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from .. import clock
from ..model.platform_codes import CANONICAL
from ..services import reach
from .pseudonym import PSEUDED

if TYPE_CHECKING:
    from .retention import Action, Lifecycle, Plan

DIRECTIVE_SYSTEM = f"{CANONICAL}/CodeSystem/post-mortem-directive"
ADR = "http://terminology.hl7.org/CodeSystem/consentscope|adr"
DIRECTIVES = ("keep", "erase", "communicate")
# Consents are a living person's decisions about who may see what: an archive keeps none.
NOT_ARCHIVED = frozenset({"Consent"})
GRACE = timedelta(days=30)


async def directive(ctx: Any, patient_id: str) -> tuple[str, str | None] | None:
    """The patient's directive (`keep`, `erase` or `communicate`) and the person to inform."""
    latest: dict[str, Any] | None = None
    async for consent in reach.matching(ctx, "Consent", [
            ("patient", f"Patient/{patient_id}"), ("scope", ADR), ("status", "active"),
            ("category", f"{DIRECTIVE_SYSTEM}|post-mortem-directive")]):
        if latest is None or consent["meta"]["lastUpdated"] > latest["meta"]["lastUpdated"]:
            latest = consent
    if latest is None:
        return None
    codes = [c.get("code") for rule in [latest.get("policyRule", {})]
             for c in rule.get("coding", []) if c.get("system") == DIRECTIVE_SYSTEM]
    code = next((c for c in codes if c in DIRECTIVES), None)
    if code is None:
        return None
    person = next((a.get("reference", {}).get("reference") for a in
                   latest.get("provision", {}).get("actor", [])), None)
    return code, person


async def plan(life: Lifecycle, made: Plan) -> None:
    """The directives of the patients marked deceased that are still to apply."""
    from .retention import Action  # noqa: PLC0415 - the module that imports this one

    sent = await life.warnings.scheduled("retention/post-mortem/") if life.warnings else set()
    async for patient in reach.matching(life.ctx, "Patient", [
            ("deceased", "true"), ("_security:not", f"{PSEUDED['system']}|{PSEUDED['code']}"),
            ("_lastUpdated", f"le{made.today - GRACE}")]):
        target = f"Patient/{patient['id']}"
        found = await directive(life.ctx, patient["id"])
        if found is None or found[0] == "keep":
            continue
        code, person = found
        if code == "erase":
            why = await life.holds.held(patient["id"])
            made.actions.append(Action("post-mortem", "pseudonymise" if why else "erase", target))
            if why:
                made.kept.append((target, why))
        elif (person and life.warnings is not None and _key(patient["id"]) not in sent
              and await _relative_of(life, person, target)):
            made.actions.append(Action("post-mortem", "communicate", target, detail=person))


async def _relative_of(life: Lifecycle, person: str, target: str) -> bool:
    """Whether `person` is a RelatedPerson of the Patient `target`."""
    if not person.startswith("RelatedPerson/"):
        return False
    relative = await reach.current(life.ctx, person)
    return relative is not None and relative.get("patient", {}).get("reference") == target


def _key(patient_id: str) -> str:
    return f"retention/post-mortem/{patient_id}"


async def communicate(life: Lifecycle, action: Action) -> None:
    """Send the named person the notice of a `communicate` directive."""
    assert life.warnings is not None
    patient_id = action.target.split("/")[1]
    await life.warnings.warn(person=action.detail, template="post-mortem-communication",
                             params={},
                             not_before=datetime.combine(clock.now().date(), time(), clock.now().tzinfo),
                             key=_key(patient_id))
