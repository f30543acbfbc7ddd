"""Terminology: the CodeSystems, ValueSets and ConceptMaps the server holds (catalogue.py) and
the operations on them ($lookup, $validate-code, $expand, $translate), as FHIR knowledge
without access or audit, which the service layer adds (services/terminology.py)."""

from .capabilities import terminology_capabilities
from .catalogue import DEFAULT_MAX_EXPANSION, Catalogue, load_catalogue
from .codesystems import CodeSystem, Concept
from .compose import held_system
from .operator import Refused, install, operator_dir
from .lookup import CODE_SYSTEM_VALIDATE, LOOKUP, Verdict, check_coding, lookup, validate_in_system
from .parameters import Inputs, Pair, pairs_of
from .translation import TRANSLATE, translate
from .valuesets import (EXPAND, VALUE_SET_VALIDATE, check_in_value_set, expand, membership,
                        validate_in_value_set)

__all__ = [
    "CODE_SYSTEM_VALIDATE", "DEFAULT_MAX_EXPANSION", "EXPAND", "LOOKUP", "TRANSLATE",
    "VALUE_SET_VALIDATE", "Catalogue", "CodeSystem", "Concept", "Inputs", "Pair", "Refused", "Verdict",
    "check_coding", "check_in_value_set", "expand", "held_system", "install", "load_catalogue", "lookup", "membership",
    "operator_dir", "pairs_of", "terminology_capabilities", "translate", "validate_in_system", "validate_in_value_set",
]
