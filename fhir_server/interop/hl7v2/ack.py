"""Acknowledgments (HL7 v2 original mode): MSH, MSA (AA, AE or AR and the control id
acknowledged) and one ERR per problem (location, HL7 error code, severity, reason)."""

from __future__ import annotations

from uuid import uuid4

from ... import clock
from .message import Header
from .problems import Problem

_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def escape(text: str) -> str:
    """`text` safe inside a field (HL7 escape sequences), on one line."""
    for char, sequence in _ESCAPES:
        text = text.replace(char, sequence)
    return " ".join(text.split())


def acknowledgment(header: Header | None, code: str, problems: tuple[Problem, ...] = (),
                   codec: str = "utf-8") -> bytes:
    """The ACK of a message whose header is `header` (None: unreadable), encoded as it was."""
    now = clock.instant()
    stamp = now[:19].replace("-", "").replace(":", "").replace("T", "") + "+0000"
    h = header
    msh = ["MSH", "^~\\&", h.receiving_application if h else "", h.receiving_facility if h else "",
           h.sending_application if h else "", h.sending_facility if h else "", stamp, "",
           f"ACK^{h.event}^ACK" if h and h.event else "ACK", uuid4().hex[:20], "P",
           h.version if h and h.version else "2.5", "", "", "", "", "", h.charset if h else ""]
    # Components of MSH-3..6 are kept as sent (they are sent back as they came).
    first = next((p for p in problems if p.severity == "E"), problems[0] if problems else None)
    segments = ["|".join(msh).rstrip("|"),
                "|".join(["MSA", code, escape(h.control_id) if h else "",
                          escape(first.reason)[:80] if first else ""]).rstrip("|")]
    for problem in problems:
        where = problem.location
        erl = "^".join([where.segment, str(where.occurrence), str(where.field or ""),
                        "1" if where.field else "", str(where.component or "")]).rstrip("^") if where else ""
        segments.append("|".join(["ERR", "", erl, f"{problem.code.value}^{problem.text}^HL70357",
                                  problem.severity, "", "", "", escape(problem.reason)]))
    return ("\r".join(segments) + "\r").encode(codec, "replace")
