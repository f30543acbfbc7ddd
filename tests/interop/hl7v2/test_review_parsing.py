"""Hostile review of the lazy parser (issue 20): every field of every test message split as
python-hl7's full parse splits it, and hexadecimal data (\\Xhh..\\) read as bytes of the
character set MSH-18 names (python-hl7 reads each byte as a character, Latin-1's)."""

from __future__ import annotations

from pathlib import Path

import hl7
import pytest

from fhir_server.interop.hl7v2.message import CHARSETS, Node, decode

from .conftest import MESSAGES, message

ESCAPED = (b"MSH|^~\\&|A|B|C|D|20250101||ADT^A28^ADT_A05|X1|P|2.5|||||FRA|8859/1\r"
           b"PID|1||1^^^H&1.2&ISO^PI||DUPONT\\F\\X^\\S\\Jos\xe9\\T\\\\R\\\\E\\^^^^^L~B&C^D&&E||x\\X41\\y|a&b^c~d\r"
           b"ZZZ|\\E\\\\F\\|&&^~|\\H\\bold\\N\\|\\E\\X41\\E\\")


def _theirs(full: hl7.Message, field: object) -> list[list[list[str]]]:
    """python-hl7's tree of a field as repetitions of components of subcomponents, unescaped."""
    reps = field if isinstance(field, hl7.containers.Field) else [field]
    tree = []
    for repetition in reps:
        components = repetition if isinstance(repetition, hl7.containers.Repetition) else [repetition]
        tree.append([[full.unescape(str(s)) for s in (c if isinstance(c, hl7.containers.Component) else [c])]
                     for c in components])
    return [r for r in tree if any(s for c in r for s in c)]


@pytest.mark.parametrize("raw", [*(message(p.name) for p in sorted(MESSAGES.glob("*.hl7"))), ESCAPED],
                         ids=[*(p.stem for p in sorted(MESSAGES.glob("*.hl7"))), "escapes"])
def test_fields_as_python_hl7_parses_them(raw: bytes) -> None:
    mine = decode(raw)
    full = hl7.parse(raw.decode(CHARSETS[mine.header.charset]).strip())
    for segment, theirs in zip(mine.segments, full, strict=True):
        for number in range(3 if segment.id == "MSH" else 1, len(segment.texts)):
            split: list[Node] = segment.field(number)
            assert [[[mine.unescape(s) for s in c] for c in r] for r in split] == _theirs(
                full, theirs[number] if number < len(theirs) else ""), (segment.id, number)


@pytest.mark.parametrize(("charset", "escaped", "meant"), [
    ("UNICODE UTF-8", "P\\XC3A9\\TIT", "PéTIT"), ("8859/1", "P\\XE9\\TIT", "PéTIT"),
    ("8859/15", "\\XA4\\", "€"), ("", "\\X41\\", "A"),
    ("8859/1", "\\E\\X41\\E\\", "\\X41\\"), ("8859/1", "a\\XE9\\\\F\\b", "aé|b")])
def test_hexadecimal_data_is_bytes_of_the_message_character_set(charset: str, escaped: str,
                                                                  meant: str) -> None:
    raw = message("adt_a28_add_person.hl7").replace(b"|UNICODE UTF-8", f"|{charset}".encode())
    parsed = decode(raw)
    assert parsed.unescape(escaped) == meant


def test_a_repeated_msh_18_is_read_by_its_first_repetition() -> None:
    # MSH-18 repeats (HL7 v2.5 2.14.9.18): the first is the character set of the message.
    raw = (message("adt_a28_add_person.hl7").replace(b"|UNICODE UTF-8", b"|8859/1~UNICODE UTF-8")
           .replace(b"PETIT", "PÉTIT".encode("latin-1")))
    parsed = decode(raw)
    assert parsed.header.charset == "8859/1"
    assert parsed.all("PID")[0].field(5)[0][0] == ["PÉTIT"]
