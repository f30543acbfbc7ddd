"""One-time codes confirming proposed Consents (fhir_server/access/codes.py): kept hashed,
spent once used, refused after expiry or too many attempts."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from fhir_server.access import codes
from fhir_server.access import CodeCheck, ConfirmationCodes

DR = "Practitioner/dr"


def test_a_code_is_kept_hashed_and_spent_once(tmp_path: Path) -> None:
    book = ConfirmationCodes(tmp_path / "codes.db")
    code, _ = book.issue("Consent/1", DR, "p1")
    assert len(code) == codes.DIGITS and code.isdigit()
    assert code.encode() not in (tmp_path / "codes.db").read_bytes()
    assert book.check("Consent/2", code, DR) is CodeCheck.NONE
    assert book.check("Consent/1", code, DR) is CodeCheck.CONFIRMED
    assert book.check("Consent/1", code, DR) is CodeCheck.NONE


def test_a_new_code_replaces_the_old_one(tmp_path: Path) -> None:
    book = ConfirmationCodes(tmp_path / "codes.db")
    old, _ = book.issue("Consent/1", DR, "p1")
    new, _ = book.issue("Consent/1", DR, "p1")
    if old != new:
        assert book.check("Consent/1", old, DR) is CodeCheck.WRONG
    assert book.check("Consent/1", new, DR) is CodeCheck.CONFIRMED


def test_attempts_are_limited(tmp_path: Path) -> None:
    book = ConfirmationCodes(tmp_path / "codes.db")
    code, _ = book.issue("Consent/1", DR, "p1")
    wrong = "x" * codes.DIGITS
    assert [book.check("Consent/1", wrong, DR) for _ in range(codes.MAX_ATTEMPTS)] == [CodeCheck.WRONG] * codes.MAX_ATTEMPTS
    assert book.check("Consent/1", code, DR) is CodeCheck.EXHAUSTED


def test_a_code_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = ConfirmationCodes(tmp_path / "codes.db")
    monkeypatch.setattr(codes, "LIFETIME", -1.0)
    code, _ = book.issue("Consent/1", DR, "p1")
    assert book.check("Consent/1", code, DR) is CodeCheck.EXPIRED


def test_wrong_codes_are_limited_per_asker_across_codes(tmp_path: Path) -> None:
    """Proposing again buys no more guesses: past MAX_FAILURES wrong codes, any code of the
    asker is refused until the window passes; another asker is not held back."""
    book = ConfirmationCodes(tmp_path / "codes.db")
    wrong = "x" * codes.DIGITS
    issued = [book.issue(f"Consent/{n}", DR, f"p{n}")[0] for n in range(codes.MAX_FAILURES)]
    assert [book.check(f"Consent/{n}", wrong, DR) for n in range(codes.MAX_FAILURES)] == [CodeCheck.WRONG] * codes.MAX_FAILURES
    right, _ = book.issue("Consent/new", DR, "p-new")
    assert book.check("Consent/new", right, DR) is CodeCheck.THROTTLED
    assert book.check("Consent/0", issued[0], "Patient/p0") is CodeCheck.CONFIRMED


def test_the_window_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = ConfirmationCodes(tmp_path / "codes.db")
    monkeypatch.setattr(codes, "MAX_FAILURES", 1)
    book.issue("Consent/1", DR, "p1")
    assert book.check("Consent/1", "x", DR) is CodeCheck.WRONG
    assert book.check("Consent/1", "x", DR) is CodeCheck.THROTTLED
    monkeypatch.setattr(codes, "FAILURE_WINDOW", -1.0)
    assert book.check("Consent/1", "x", DR) is CodeCheck.WRONG


def test_pending_codes_are_those_of_one_asker_for_one_patient(tmp_path: Path) -> None:
    book = ConfirmationCodes(tmp_path / "codes.db")
    book.issue("Consent/1", DR, "p1")
    book.issue("Consent/2", DR, "p2")
    book.issue("Consent/3", "Practitioner/other", "p1")
    assert book.pending(DR, "p1") == ["Consent/1"]
    book.spend(["Consent/1"])
    assert book.pending(DR, "p1") == [] and book.check("Consent/1", "x", DR) is CodeCheck.NONE
    assert book.pending("Practitioner/other", "p1") == ["Consent/3"]


def test_a_file_of_the_first_release_gains_the_new_columns(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "codes.db")) as old:
        old.execute("CREATE TABLE code (consent TEXT PRIMARY KEY, salt BLOB NOT NULL, hash BLOB NOT NULL, "
                    "expires REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)")
        old.commit()
    book = ConfirmationCodes(tmp_path / "codes.db")
    code, _ = book.issue("Consent/1", DR, "p1")
    assert book.pending(DR, "p1") == ["Consent/1"] and book.check("Consent/1", code, DR) is CodeCheck.CONFIRMED
