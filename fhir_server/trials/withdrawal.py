"""What a change to a patient's consents does to the referrals already sent: once sharing
with investigators is no longer in force (the research Consent made inactive, a deny
provision, an objection or a restriction of processing), each open referral of that patient
is marked withdrawn, with its frozen record and its ResearchSubject. Access itself needs no
marking: it is decided from the consents at every request (access/consent.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson

from ..model import platform_codes as codes
from ..model.errors import FhirError
from ..services import reach
from ..services.context import Context
from ..store.base import Version
from ..services.server_writes import as_server
from .referral import withdraw

log = logging.getLogger("fhir_server.trials")


async def after_consent_change(ctx: Context, versions: Sequence[Version]) -> None:
    """A commit hook (services/context.py): withdraw the referrals of the patients whose
    sharing consent is no longer in force after `versions` were written."""
    changed = [v for v in versions if v.resource_type == "Consent"]
    if not changed:
        return
    server = as_server(ctx)
    patients = {p for v in changed for p in await reach.consent_patients(server, v)}
    for patient in sorted(patients):
        if await reach.sharing_consent(server, patient) is not None:
            continue
        referrals = await reach.find(server, "Communication", [
            ("subject", f"Patient/{patient}"), ("status", "in-progress,completed"),
            ("category", f"{codes.MESSAGE_SYSTEM}|{codes.REFERRAL}")])
        for referral in referrals:
            await _mark(server, referral["id"])


async def _mark(ctx: Context, referral_id: str) -> None:
    """Mark one referral withdrawn, again if an answer changed it meanwhile (its writes are
    pinned to the versions read). The consent itself is stored whatever happens here: a
    failure is logged, not turned into the client's error."""
    for _ in range(3):
        found = await ctx.store.read("Communication", referral_id)
        if found is None or found.body is None or orjson.loads(found.body).get("status") == "stopped":
            return
        try:
            await withdraw(ctx, found)
        except FhirError:
            continue
        log.info("referral withdrawn", extra={"referral": referral_id})
        return
    log.error("referral not marked withdrawn", extra={"referral": referral_id})
