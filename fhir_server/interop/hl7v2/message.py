"""A received HL7 v2 message: its bytes decoded by the character set MSH-18 names (a UTF-8 byte
order mark dropped), its header read, and its fields as plain lists.

python-hl7 reads the separators MSH declares and decodes escape sequences; a field is split
into repetitions, components and subcomponents by those separators when first asked for
(python-hl7's whole tree of containers cost ten times as much, for fields no map reads).

Every segment is kept, Z-segments and segments no mapping reads included: the raw bytes are
stored as received (inbox.py), and `segments` lists them all."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as attribute
from typing import Union

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
    control_id: str  # MSH-10, escape sequences decoded
    processing_id: str  # MSH-11.1
    version: str  # MSH-12.1
    charset: str  # MSH-18 as sent

    @property
    def sender(self) -> str:
        """Who sent it (MSH-3 and MSH-4): with MSH-10, the key of a message."""
        return f"{self.sending_application}|{self.sending_facility}"


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment: its id, which occurrence of that id it is, and its fields as sent (index
    = field number; MSH-1 is the field separator, MSH-2 the encoding characters), split
    into plain lists by `separators` (repetition, component, subcomponent) when first asked for."""

    id: str
    occurrence: int
    texts: list[str]
    separators: str
    _fields: dict[int, list[Node]] = attribute(default_factory=dict, compare=False, repr=False)

    def field(self, number: int) -> list[Node]:
        """The non-empty repetitions of field `number` ([] when absent or empty)."""
        found = self._fields.get(number)
        if found is None:
            found = ([r for r in self._split(number) if _filled(r)]
                     if number < len(self.texts) else [])
            self._fields[number] = found
        return found

    def _split(self, number: int) -> list[Node]:
        text = self.texts[number]
        if self.id == "MSH" and number <= 2:  # the separators themselves
            return [[[text]]]
        repetition, component, subcomponent = self.separators
        return [[c.split(subcomponent) for c in r.split(component)] for r in text.split(repetition)]

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
    _check_encoding_characters(raw.split(b"\r", 1)[0][4:].split(separator, 1)[0], separator)
    # MSH-18 is read before decoding: MSH is ASCII in every character set of table 0211.
    msh = raw.split(b"\r", 1)[0].split(separator)
    # Its first repetition's first component: the message's character set (others are alternates).
    charset = (msh[17].decode("ascii", "replace").split(chr(raw[5]), 1)[0].split(chr(raw[4]), 1)[0]
               if len(msh) > 17 else "")
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
        plan = hl7.parser.create_parse_plan(text.strip())
    except Exception as exc:  # python-hl7 raises several kinds on malformed input
        raise rejected(Code.SEGMENT_SEQUENCE, f"Unreadable message: {exc}.") from None
    # plan.separators: segment, field, repetition, component, subcomponent.
    segments = _segments(text.strip(), plan.separators)
    unescape = _unescaper(plan.separators, plan.esc, codec)
    header = _header(segments[0], unescape)
    if not header.control_id:
        raise rejected(Code.REQUIRED_FIELD_MISSING, "MSH-10 (message control id) is empty.",
                       Location("MSH", 1, 10))
    return Message(header, segments, unescape)


def _check_encoding_characters(encoding: bytes, separator: bytes) -> None:
    """MSH-2: the component, repetition, escape and subcomponent characters (and from v2.7 the
    truncation character), distinct, none a letter, digit, space or the field separator."""
    chars = encoding.decode("latin-1")
    if (len(chars) not in (4, 5) or len(set(chars)) != len(chars) or separator.decode("latin-1") in chars
            or any(c.isalnum() or c.isspace() or not c.isprintable() for c in chars)):
        raise rejected(Code.DATA_TYPE, f"MSH-2 must hold the four encoding characters (five "
                       f"from v2.7), distinct and none a letter, digit or space; found "
                       f"'{chars[:8]}'.", Location("MSH", 1, 2))


def _unescaper(separators: str, esc: str, codec: str) -> Callable[[str], str]:
    """python-hl7's unescape, except hexadecimal data (`\\Xhh..\\`): the bytes it gives are
    read in the message's character set (python-hl7 makes each byte a character, as Latin-1
    would: a UTF-8 `\\XC3A9\\` became two characters, not é)."""
    escapes = hl7.Message(separators=separators, esc=esc)
    e = re.escape(esc)
    sequence = re.compile(f"{e}[^{e}]*{e}")  # escape sequences, found left to right
    hexadecimal = re.compile(f"{e}X((?:[0-9A-Fa-f]{{2}})+){e}")

    def unescape(value: str) -> str:
        if esc not in value:
            return value
        parts, start = [], 0
        for found in sequence.finditer(value):
            if data := hexadecimal.fullmatch(found[0]):
                parts += [escapes.unescape(value[start:found.start()]),
                          bytes.fromhex(data[1]).decode(codec, "replace")]
                start = found.end()
        return "".join([*parts, escapes.unescape(value[start:])])
    return unescape


def read(raw: bytes) -> Message | Refused:
    """`decode`, its refusal returned rather than raised."""
    try:
        return decode(raw)
    except Refused as refused:
        return refused


def _segments(text: str, separators: str) -> tuple[Segment, ...]:
    seen: dict[str, int] = {}
    segments = []
    for line in text.split(separators[0]):
        texts = line.split(separators[1])
        id = texts[0]
        if id == "MSH":  # MSH-1 is the field separator itself: MSH-n is at n as elsewhere
            texts.insert(1, separators[1])
        seen[id] = seen.get(id, 0) + 1
        segments.append(Segment(id, seen[id], texts, separators[2:5]))
    return tuple(segments)


def _filled(node: Node) -> bool:
    """Whether `node` holds any text (short of building it, as `_text` would)."""
    if isinstance(node, str):
        return node != ""
    return any(_filled(n) for n in node)


def _text(node: Node) -> str:
    return node if isinstance(node, str) else "".join(_text(n) for n in node)


def first(node: Node) -> str:
    """The first string of `node` (a component's first subcomponent, ...)."""
    while isinstance(node, list):
        if not node:
            return ""
        node = node[0]
    return node


def _header(msh: Segment, unescape: Callable[[str], str]) -> Header:
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
        # The control id as meant (escapes decoded): the ACK's MSA-2 escapes it again.
        control_id=unescape(part(10)), processing_id=part(11), version=part(12), charset=part(18))
