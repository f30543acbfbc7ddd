"""Human-readable copies of a record (docs/privacy.md, "Human-readable export"): a PDF of the
record in French or English, one CSV per resource type, and a physician's referrals as a
spreadsheet. The content comes from `$everything` and the services' searches, so each export
holds what the caller may see, no more, and is audited like the requests it makes."""

from .content import parse_language
from .delivery import FORMATS, Export, patient_export, referrals_export
from .labels import Language

__all__ = ["FORMATS", "Export", "Language", "parse_language", "patient_export", "referrals_export"]
