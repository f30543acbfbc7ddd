"""One-time codes confirming proposed Consents (fhir_server/access/codes.py): kept hashed,
spent once used, refused after expiry or too many attempts."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.access import codes
from fhir_server.access import CodeCheck, ConfirmationCodes


def test_a_code_is_kept_hashed_and_spent_once(tmp_path: Path) -> None:
    book = ConfirmationCodes(tmp_path / "codes.db")
    code, _ = book.issue("Consent/1")
    assert len(code) == codes.DIGITS and code.isdigit()
    assert code.encode() not in (tmp_path / "codes.db").read_bytes()
    assert book.check("Consent/2", code) is CodeCheck.NONE
    assert book.check("Consent/1", code) is CodeCheck.CONFIRMED
    assert book.check("Consent/1", code) is CodeCheck.NONE


def test_a_new_code_replaces_the_old_one(tmp_path: Path) -> None:
    book = ConfirmationCodes(tmp_path / "codes.db")
    old, _ = book.issue("Consent/1")
    new, _ = book.issue("Consent/1")
    if old != new:
        assert book.check("Consent/1", old) is CodeCheck.WRONG
    assert book.check("Consent/1", new) is CodeCheck.CONFIRMED


def test_attempts_are_limited(tmp_path: Path) -> None:
    book = ConfirmationCodes(tmp_path / "codes.db")
    code, _ = book.issue("Consent/1")
    wrong = "x" * codes.DIGITS
    assert [book.check("Consent/1", wrong) for _ in range(codes.MAX_ATTEMPTS)] == [CodeCheck.WRONG] * codes.MAX_ATTEMPTS
    assert book.check("Consent/1", code) is CodeCheck.EXHAUSTED


def test_a_code_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = ConfirmationCodes(tmp_path / "codes.db")
    monkeypatch.setattr(codes, "LIFETIME", -1.0)
    code, _ = book.issue("Consent/1")
    assert book.check("Consent/1", code) is CodeCheck.EXPIRED
