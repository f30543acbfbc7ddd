"""Errors a client can cause, as values: a kind, and the OperationOutcome issues that explain it.

Domain code raises `FhirError`; only `http/errors.py` knows which HTTP status a `Kind` gets
(FHIR R4 http.html, operationoutcome.html). Messages here are shown to clients: never put
stored health data, secrets or stack traces in them.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from enum import Enum


class Kind(Enum):
    """The closed set of failure categories."""

    INVALID = "invalid"  # the request itself is malformed
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not-found"
    NOT_ALLOWED = "not-allowed"  # method not allowed on this path
    NOT_ACCEPTABLE = "not-acceptable"
    GONE = "gone"
    CONFLICT = "conflict"
    PRECONDITION_FAILED = "precondition-failed"
    TOO_LARGE = "too-large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    UNPROCESSABLE = "unprocessable"  # well-formed, but breaks FHIR rules
    NOT_SUPPORTED = "not-supported"
    BUSY = "busy"
    TOO_MANY = "too-many"  # this caller asks too much at once: retry later
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue.

    `code` is from the IssueType value set; `details_code` from the official
    http://terminology.hl7.org/CodeSystem/operation-outcome code system when one fits.
    """

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = ()
    details_code: str | None = None


@dataclass(eq=False)
class FhirError(Exception):
    """A failure explained to the client by `issues`."""

    kind: Kind
    issues: tuple[Issue, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        super().__init__(self.kind.value, *(i.diagnostics for i in self.issues))


def fail(
    kind: Kind,
    code: str,
    diagnostics: str,
    *,
    expression: str | None = None,
    details_code: str | None = None,
) -> FhirError:
    """Build a one-issue `FhirError` (to be raised by the caller)."""
    issue = Issue(
        code=code,
        diagnostics=diagnostics,
        expression=(expression,) if expression else (),
        details_code=details_code,
    )
    return FhirError(kind, (issue,))


def incident(log: logging.Logger) -> FhirError:
    """Log the exception being handled under a fresh incident id, and return the FAULT the
    client sees instead: the id to quote, never the traceback."""
    number = uuid.uuid4().hex[:12]
    log.exception("unhandled error", extra={"incident": number})
    return fail(Kind.FAULT, "exception", f"Internal error; incident {number} is in the server log.")
