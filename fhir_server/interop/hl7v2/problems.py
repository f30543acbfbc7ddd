"""What can go wrong with a message, in HL7's terms: the acknowledgment code it earns (AE, an
error in the content the sender may correct; AR, a message this receiver does not take), the
HL7 error code (table 0357), where (segment, field, component) and why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Code(StrEnum):
    """HL7 table 0357, the message error condition codes used here."""

    SEGMENT_SEQUENCE = "100"
    REQUIRED_FIELD_MISSING = "101"
    DATA_TYPE = "102"
    TABLE_VALUE_NOT_FOUND = "103"
    UNSUPPORTED_MESSAGE_TYPE = "200"
    UNSUPPORTED_EVENT = "201"
    UNSUPPORTED_PROCESSING_ID = "202"
    UNSUPPORTED_VERSION = "203"
    UNKNOWN_KEY = "204"
    DUPLICATE_KEY = "205"
    INTERNAL_ERROR = "207"


_TEXT = {
    Code.SEGMENT_SEQUENCE: "Segment sequence error",
    Code.REQUIRED_FIELD_MISSING: "Required field missing",
    Code.DATA_TYPE: "Data type error",
    Code.TABLE_VALUE_NOT_FOUND: "Table value not found",
    Code.UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    Code.UNSUPPORTED_EVENT: "Unsupported event code",
    Code.UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    Code.UNSUPPORTED_VERSION: "Unsupported version id",
    Code.UNKNOWN_KEY: "Unknown key identifier",
    Code.DUPLICATE_KEY: "Duplicate key identifier",
    Code.INTERNAL_ERROR: "Application internal error",
}


@dataclass(frozen=True, slots=True)
class Location:
    """Where in the message (HL7 ERL: segment id, its occurrence, field, component)."""

    segment: str
    occurrence: int = 1
    field: int | None = None
    component: int | None = None

    def __str__(self) -> str:
        text = self.segment if self.occurrence == 1 else f"{self.segment}[{self.occurrence}]"
        if self.field is not None:
            text += f"-{self.field}"
            if self.component is not None:
                text += f".{self.component}"
        return text


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem of a message; `severity` is ERR-4 (table 0516: E error, W warning), W for
    a warning the validator listed beside the errors that refused the message."""

    code: Code
    reason: str
    location: Location | None = None
    severity: str = "E"

    @property
    def text(self) -> str:
        return _TEXT[self.code]


class Refused(Exception):
    """A message not applied: `ack` is AE or AR, `problems` say where and why."""

    def __init__(self, ack: str, *problems: Problem) -> None:
        super().__init__("; ".join(p.reason for p in problems))
        self.ack = ack
        self.problems = problems


def rejected(code: Code, reason: str, location: Location | None = None) -> Refused:
    """An AR: a message this receiver does not take (framing, type, version, processing id)."""
    return Refused("AR", Problem(code, reason, location))


def error(code: Code, reason: str, location: Location | None = None) -> Refused:
    """An AE: an error in the message's content."""
    return Refused("AE", Problem(code, reason, location))
