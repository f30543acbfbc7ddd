"""OperationOutcome builder (FHIR R4 operationoutcome.html)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import Issue

OPERATION_OUTCOME_SYSTEM = "http://terminology.hl7.org/CodeSystem/operation-outcome"


def issue_json(issue: Issue) -> dict[str, Any]:
    """One issue as FHIR JSON."""
    out: dict[str, Any] = {"severity": issue.severity, "code": issue.code}
    if issue.details_code:
        out["details"] = {
            "coding": [{"system": OPERATION_OUTCOME_SYSTEM, "code": issue.details_code}]
        }
    out["diagnostics"] = issue.diagnostics
    if issue.expression:
        out["expression"] = list(issue.expression)
    return out


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource holding `issues`."""
    return {"resourceType": "OperationOutcome", "issue": [issue_json(i) for i in issues]}


def information(diagnostics: str) -> dict[str, Any]:
    """An all-is-well OperationOutcome, as `Prefer: return=OperationOutcome` asks for."""
    return operation_outcome([Issue(code="informational", diagnostics=diagnostics, severity="information")])
