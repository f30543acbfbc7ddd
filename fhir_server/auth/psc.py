"""Pro Santé Connect (PSC), the French State's sign-in for health professionals: what its
tokens say about the professional, checked against the RPPS register when one is loaded, and
the Practitioner they become on first sign-in (docs/auth.md, "Pro Santé Connect").

Claims read: the IDNPS (`8` + RPPS) or RPPS number in `SubjectNameID`, else
`preferred_username`; the name in `family_name` / `given_name`; the professions in
`SubjectRefPro.exercices[].codeProfession` (ANS TRE_G15).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..model.french_ids import RPPS_SYSTEM, rpps_number
from .rpps import RppsRegister

ID_CLAIMS: Final = ("SubjectNameID", "preferred_username")
PROFESSION_SYSTEM: Final = ("https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/"
                             "TRE-G15-ProfessionSante")
UNKNOWN: Final = "Unknown professional."


class UnknownProfessional(Exception):
    """The token names no professional this server accepts; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class Professional:
    """The health professional a PSC token names."""

    rpps: str
    family: str
    given: str
    professions: tuple[str, ...]  # TRE_G15 codes

    def practitioner(self) -> dict[str, Any] | None:
        """The Practitioner to create on first sign-in (without its id); None when the token
        lacks the family name a Practitioner needs to be told apart."""
        if not self.family:
            return None
        name: dict[str, Any] = {"use": "official", "family": self.family}
        if self.given:
            name["given"] = [self.given]
        resource: dict[str, Any] = {
            "resourceType": "Practitioner", "active": True, "name": [name],
            "identifier": [{"use": "official", "system": RPPS_SYSTEM, "value": self.rpps}]}
        if self.professions:
            resource["qualification"] = [{"code": {"coding": [{"system": PROFESSION_SYSTEM,
                                                               "code": code}]}}
                                         for code in self.professions]
        return resource


def professional_of(claims: dict[str, Any]) -> Professional:
    """The professional of verified PSC `claims`; UnknownProfessional without an RPPS number."""
    number = next((rpps_number(claims[c]) for c in ID_CLAIMS if isinstance(claims.get(c), str)),
                  None)
    if number is None:
        raise UnknownProfessional(UNKNOWN)
    return Professional(number, _text(claims.get("family_name")), _text(claims.get("given_name")),
                        _professions(claims.get("SubjectRefPro")))


def check_register(path: Path, professional: Professional) -> None:
    """UnknownProfessional, with the register's reason, when an RPPS register is loaded and
    does not list `professional` as active; nothing when no register was ever loaded."""
    if not path.exists():
        return
    register = RppsRegister(path)
    try:
        if register.loaded_at() is not None:
            register.check(professional.rpps)
    except ValueError as exc:
        raise UnknownProfessional(f"{UNKNOWN} {exc}") from None
    finally:
        register.close()


def _text(value: Any) -> str:
    return value.strip()[:200] if isinstance(value, str) else ""


def _professions(ref_pro: Any) -> tuple[str, ...]:
    exercices = ref_pro.get("exercices") if isinstance(ref_pro, dict) else None
    if not isinstance(exercices, list):
        return ()
    codes = (e.get("codeProfession") for e in exercices if isinstance(e, dict))
    return tuple(dict.fromkeys(c for c in codes if isinstance(c, str) and c.isalnum()))
