"""Who the caller is is decided in one place (services/principals.py): no rule of the API
tests the kind of `fhirUser` itself; it asks the Principal's role."""

from __future__ import annotations

import re
from pathlib import Path

import fhir_server

ROOT = Path(fhir_server.__file__).parent
# The packages deciding what an API request may do (auth/ issues tokens, before any request).
DECIDING = ("access", "http", "services", "trials")
# principals.py decides; launch_context.py offers patients at sign-in, before any token exists.
DECIDERS = ("principals.py", "launch_context.py")
PREFIX_TEST = re.compile(r"fhir_user\b[^\n]*\.(startswith|partition)\(")


def test_no_rule_tests_the_kind_of_fhir_user() -> None:
    found = [f"{path.relative_to(ROOT)}:{n}" for package in DECIDING
             for path in sorted((ROOT / package).rglob("*.py"))
             if path.name not in DECIDERS
             for n, line in enumerate(path.read_text().splitlines(), 1) if PREFIX_TEST.search(line)]
    assert found == [], "decide the role in services/principals.py instead"
