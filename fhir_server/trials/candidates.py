"""`POST [base]/ResearchStudy/{id}/$save-match`: a referring physician keeps one of their
patients as a potential candidate for a trial (docs/matching.md, "Saving a result").

The patient is evaluated again here (a result sent by the client is never trusted): an
ineligible patient is refused (422, nothing stored); otherwise a `ResearchSubject` (status
`potential-candidate`, `period.start` today) is created as the physician's own write, so
access, validation and audit apply as to any create, carrying the result in the
`eligibility-match-result` extension (verdict, Groups read, nearest recruiting site, each
criterion with its evidence). Saving twice gives the ResearchSubject already there for that
patient and study, whatever its status (a conditional create): nothing is duplicated.
"""

from __future__ import annotations

from typing import Any

from .. import clock
from ..model.errors import Kind, fail
from ..services import crud, study_access
from ..services.context import Context, Payload
from ..services.guard import hidden
from ..store.base import Result
from . import match_catalogue, match_parameters
from .eligibility import INELIGIBLE, NOT_MET, TrialIndex
from .inverse import evaluated
from .match import home
from .match_render import result_extension

POTENTIAL = "potential-candidate"


def _patient(body: dict[str, Any]) -> str:
    """The one `patient` parameter (Patient/<id>), after checking the body."""
    given = []
    for parameter in body.get("parameter", []):
        if parameter.get("name") != "patient":
            raise match_parameters.invalid(str(parameter.get("name")), "unknown; $save-match takes 'patient'")
        given.append(parameter)
    if len(given) != 1:
        raise match_parameters.invalid("patient", "give exactly one patient (Patient/<id>)")
    reference = (given[0].get("valueReference") or {}).get("reference")
    kind, _, id = reference.partition("/") if isinstance(reference, str) else ("", "", "")
    if kind != "Patient" or not id or "/" in id:
        raise match_parameters.invalid("patient", "a valueReference of the form Patient/<id>")
    return id


async def save(ctx: Context, study_id: str, body: dict[str, Any]) -> Result:
    """The ResearchSubject created (outcome `created`) or already there (`matched`)."""
    if study_access.view(ctx) is not study_access.View.PATIENTS:
        raise hidden("ResearchStudy", study_id)
    if body.get("resourceType") != "Parameters":
        raise match_parameters.invalid("resourceType", "the body is a Parameters resource")
    crud.check_resource(ctx, "Parameters", Payload(body, body))
    patient = _patient(body)
    await crud.read(ctx, "ResearchStudy", study_id)
    catalogue = await match_catalogue.load(ctx)
    trial = catalogue.trials[study_id]
    today = clock.now().date()
    found = await evaluated(ctx, TrialIndex([trial]), trial, patient, today)
    if found.result is None or found.result.verdict == INELIGIBLE:
        unmet = [c.text for c in found.result.criteria if c.verdict == NOT_MET] if found.result else []
        why = "; ".join(unmet) or "an inclusion diagnosis the record does not hold"
        raise fail(Kind.UNPROCESSABLE, "business-rule",
                   f"Patient/{patient} is ineligible for ResearchStudy/{study_id} (not met: {why}); "
                   "nothing saved.", expression="Parameters.parameter.where(name='patient')")
    site, distance = catalogue.nearest(study_id, home(found.record), today)
    subject = {
        "resourceType": "ResearchSubject", "status": POTENTIAL,
        "extension": [result_extension(found.result, trial.groups, site, distance)],
        "period": {"start": today.isoformat()},
        "study": {"reference": f"ResearchStudy/{study_id}"},
        "individual": {"reference": f"Patient/{patient}"},
    }
    return await crud.create(ctx, "ResearchSubject", Payload(subject, subject),
                             if_none_exist=f"study=ResearchStudy/{study_id}&individual=Patient/{patient}")
