"""Pre-screening candidates of a trial: the pseudonym an investigator sees for a patient
whose Consent allows pre-screening for the study (trials/inverse.py).

A pseudonym is an HMAC-SHA-256 of the study and the patient under the server's key
(`Context.pseudonym_key`, derived from the key ring; without encryption, a key drawn when the
process starts, so pseudonyms then hold for the life of the process): stable for one study,
unrelated across studies, and not computable from a guessed patient id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from ..services.context import Context

_PROCESS_KEY = secrets.token_bytes(32)


def pseudonym(ctx: Context, study: str, patient: str) -> str:
    """The pseudonym of Patient/`patient` for ResearchStudy/`study`."""
    key = ctx.pseudonym_key or _PROCESS_KEY
    mac = hmac.new(key, f"{study}\x00{patient}".encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
