"""Legal holds: why a patient's data must outlive an erasure request or the end of its
retention (docs/privacy.md, "Erasure and legal holds"). A patient is held while they are a
ResearchSubject of a study still running, from the referral on (a referral makes the
ResearchSubject, docs/referrals.md): the trial's data must be kept for the trial. Only the
referral's ResearchSubjects count (identifier `referral`: the server alone writes them): one
a client wrote would let anyone who reaches the record block its erasure. Their
record is then pseudonymised instead of erased, and the archive outlives its period until
the hold ends.
"""

from __future__ import annotations

from ..model.platform_codes import REFERRAL_IDENTIFIER
from ..services import reach
from ..services.context import Context

# ResearchSubject statuses that end a person's part in a study (R4 research-subject-status).
LEFT = frozenset({"ineligible", "not-registered", "withdrawn"})
# ResearchStudy statuses of a study that no longer runs (R4 research-study-status).
ENDED = frozenset({"completed", "disapproved", "withdrawn"})


class Holds:
    """The legal holds, read from the store of `ctx` (services/erase.py `LegalHold`)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def held(self, patient_id: str) -> str | None:
        """Why Patient/`patient_id` is held, or None."""
        async for subject in reach.matching(self.ctx, "ResearchSubject", [
                ("individual", f"Patient/{patient_id}")]):
            if subject.get("status") in LEFT or not any(
                    i.get("system") == REFERRAL_IDENTIFIER for i in subject.get("identifier", [])):
                continue
            study_ref = subject.get("study", {}).get("reference", "")
            study = await reach.current(self.ctx, study_ref) if study_ref.startswith("ResearchStudy/") else None
            if study is not None and study.get("status") not in ENDED:
                return (f"the patient takes part in {study_ref} ({subject.get('status')}), whose "
                        "data must be kept for the trial while it runs")
        return None
