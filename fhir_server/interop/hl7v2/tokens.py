"""Identifiers as search tokens (`system|value`, FHIR search.html#escaping) for the
conditional writes that make a resent message change nothing."""

from __future__ import annotations

from typing import Any

_SPECIAL = ("\\", "|", ",", "$")


def _escaped(text: str) -> str:
    for char in _SPECIAL:
        text = text.replace(char, "\\" + char)
    return text


def identifier_token(identifier: dict[str, Any]) -> str:
    """`system|value` of an identifier (the mappings require a system on identifying fields)."""
    return f"{_escaped(identifier.get('system', ''))}|{_escaped(identifier.get('value', ''))}"
