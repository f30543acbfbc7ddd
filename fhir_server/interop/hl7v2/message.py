"""A received HL7 v2 message: its bytes decoded by the character set MSH-18 names (a UTF-8 byte
order mark dropped), parsed by python-hl7, its header read, and its fields as plain lists.

Every segment is kept, Z-segments and segments no mapping reads included: the raw bytes are
stored as received (inbox.py), and `segments` lists them all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as attribute
from typing import Any, Union

import hl7

from .problems import Code, Location, Refused, rejected

# MSH-18 (HL7 table 0211) -> Python codec; empty MSH-18 means ASCII, read as UTF-8, its superset.
CHARSETS = {"": "utf-8", "ASCII": "ascii", "8859/1": "latin-1", "8859/15": "iso8859-15",
            "UNICODE UTF-8": "utf-8"}
_BOM = b"\xef\xbb\xbf"

# A field as plain lists: repetitions of components of subcomponents (strings).
Node = Union[str, list["Node"]]


@dataclass(frozen=True, slots=True)
class Header:
    """What MSH says about the message."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str  # MSH-9.1
    event: str  # MSH-9.2
    structure: str  # MSH-9.3, may be empty
    control_id: str  # MSH-10
    processing_id: str  # MSH-11.1
    version: str  # MSH-12.1
    charset: str  # MSH-18 as sent

    @property
    def sender(self) -> str:
        """Who sent it (MSH-3 and MSH-4): with MSH-10, the key of a message."""
        return f"{self.sending_application}|{self.sending_facility}"


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment: its id, which occurrence of that id it is, and its fields as python-hl7
    parsed them (index = field number), turned into plain lists when first asked for."""

    id: str
    occurrence: int
    parsed: Any
    _fields: dict[int, list[Node]] = attribute(default_factory=dict, compare=False, repr=False)

    def field(self, number: int) -> list[Node]:
        """The non-empty repetitions of field `number` ([] when absent or empty)."""
        found = self._fields.get(number)
        if found is None:
            found = ([r for r in _field(self.parsed[number]) if _text(r)]
                     if number < len(self.parsed) else [])
            self._fields[number] = found
        return found

    def location(self, field: int | None = None, component: int | None = None) -> Location:
        return Location(self.id, self.occurrence, field, component)


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded, parsed message."""

    header: Header
    segments: tuple[Segment, ...]
    unescape: Callable[[str], str]

    def all(self, segment_id: str) -> list[Segment]:
        return [s for s in self.segments if s.id == segment_id]

    def patients(self) -> frozenset[str]:
        """The patient identifiers the message names (PID-3, MRG-1, as sent): two messages
        naming none in common can be applied in any order."""
        return frozenset(_text(repetition) for segment in self.segments
                         if segment.id in ("PID", "MRG")
                         for repetition in segment.field(3 if segment.id == "PID" else 1))


def decode(raw: bytes) -> Message:
    """Decode and parse `raw` (the bytes between MLLP's start and end blocks).

    Raises Refused: AR when the message cannot be read at all (no MSH, an unknown character
    set, bytes the character set refuses, no control id)."""
    if raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    raw = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r")
    if not raw.startswith(b"MSH") or len(raw) < 8:
        raise rejected(Code.SEGMENT_SEQUENCE, "The message does not begin with an MSH segment.",
                       Location("MSH"))
    separator = raw[3:4]
    # MSH-18 is read before decoding: MSH is ASCII in every character set of table 0211.
    msh = raw.split(b"\r", 1)[0].split(separator)
    charset = msh[17].decode("ascii", "replace").split(chr(raw[4]), 1)[0] if len(msh) > 17 else ""
    codec = CHARSETS.get(charset)
    if codec is None:
        raise rejected(Code.TABLE_VALUE_NOT_FOUND, f"Unsupported character set '{charset[:20]}' "
                       f"(supported: {', '.join(c for c in CHARSETS if c)}).", Location("MSH", 1, 18))
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise rejected(Code.DATA_TYPE, f"Byte {exc.start} is not valid {charset or 'ASCII/UTF-8'}.",
                       Location("MSH", 1, 18)) from None
    try:
        parsed = hl7.parse(text)
    except Exception as exc:  # python-hl7 raises several kinds on malformed input
        raise rejected(Code.SEGMENT_SEQUENCE, f"Unreadable message: {exc}.") from None
    segments = _segments(parsed)
    header = _header(segments[0])
    if not header.control_id:
        raise rejected(Code.REQUIRED_FIELD_MISSING, "MSH-10 (message control id) is empty.",
                       Location("MSH", 1, 10))
    return Message(header, segments, parsed.unescape)


def read(raw: bytes) -> Message | Refused:
    """`decode`, its refusal returned rather than raised."""
    try:
        return decode(raw)
    except Refused as refused:
        return refused


def _segments(parsed: Any) -> tuple[Segment, ...]:
    seen: dict[str, int] = {}
    segments = []
    for segment in parsed:
        id = str(segment[0])
        seen[id] = seen.get(id, 0) + 1
        # python-hl7 gives MSH-1 (the separator) its own index: MSH-n is at n as elsewhere.
        segments.append(Segment(id, seen[id], segment))
    return tuple(segments)


def _field(node: Any) -> list[Node]:
    """A python-hl7 field as repetitions of components of subcomponents."""
    if isinstance(node, str):
        return [[[node]]]
    if node and all(isinstance(child, str) for child in node):
        return [[[child] for child in node]] if isinstance(node, hl7.Repetition) else [[[node[0]]]]
    return [_repetition(r) for r in node]


def _repetition(node: Any) -> list[Node]:
    if isinstance(node, str):
        return [[node]]
    return [[c] if isinstance(c, str) else [str(s) for s in c] for c in node]


def _text(node: Node) -> str:
    return node if isinstance(node, str) else "".join(_text(n) for n in node)


def first(node: Node) -> str:
    """The first string of `node` (a component's first subcomponent, ...)."""
    while isinstance(node, list):
        if not node:
            return ""
        node = node[0]
    return node


def _header(msh: Segment) -> Header:
    def part(field: int, component: int = 1) -> str:
        repetitions = msh.field(field)
        if not repetitions:
            return ""
        components = repetitions[0]
        if not isinstance(components, list) or component > len(components):
            return ""
        return first(components[component - 1]).strip()

    def whole(field: int) -> str:
        repetitions = msh.field(field)
        return "^".join(first(c) for c in repetitions[0]) if repetitions and isinstance(
            repetitions[0], list) else ""

    return Header(
        sending_application=whole(3), sending_facility=whole(4),
        receiving_application=whole(5), receiving_facility=whole(6),
        message_type=part(9, 1), event=part(9, 2), structure=part(9, 3),
        control_id=part(10), processing_id=part(11), version=part(12), charset=part(18))
