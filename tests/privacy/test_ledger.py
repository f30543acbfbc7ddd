"""The erasure ledger (crypto/ledger.py): append-only, authenticated, tamper-evident."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from fhir_server.crypto.ledger import ErasureLedger, LedgerError

KEY = bytes(range(32))


def _ledger(tmp_path: Path, key: bytes = KEY) -> ErasureLedger:
    return ErasureLedger(tmp_path / "erasure-ledger", key)


def test_appends_and_finds(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    assert ledger.entries() == [] and ledger.find("a") is None
    first = ledger.append({"patient": "a", "reason": "asked"})
    ledger.append({"patient": "b", "reason": "asked"})
    assert [e["seq"] for e in ledger.entries()] == [1, 2]
    assert ledger.find("a") == first
    again = ledger.append({"patient": "a", "reason": "written to again"})
    assert ledger.find("a") == again  # the latest
    assert os.stat(ledger.path).st_mode & 0o777 == 0o600


def test_entries_appended_together_are_those_appended_one_by_one(tmp_path: Path) -> None:
    """`append_each` (a group of erasures) writes the entries `append` would, one after the
    other, chained and verified by every reader, in one write."""
    one_by_one, together = _ledger(tmp_path / "one"), _ledger(tmp_path / "together")
    for ledger in (one_by_one, together):
        ledger.append({"patient": "a", "reason": "asked"})
    for patient in ("b", "c", "d"):
        one_by_one.append({"patient": patient, "reason": "asked"})
    added = together.append_each([{"patient": p, "reason": "asked"} for p in ("b", "c", "d")])
    assert [e["seq"] for e in added] == [2, 3, 4]
    assert together.path.read_bytes() == one_by_one.path.read_bytes()
    assert _ledger(tmp_path / "together").entries() == one_by_one.entries()


@pytest.mark.parametrize("tamper", ["change", "remove-first", "swap", "partial"])
def test_tampering_is_found(tmp_path: Path, tamper: str) -> None:
    ledger = _ledger(tmp_path)
    for patient in ("a", "b", "c"):
        ledger.append({"patient": patient, "reason": "asked"})
    lines = ledger.path.read_bytes().splitlines(keepends=True)
    if tamper == "change":
        lines[1] = lines[1].replace(b'"b"', b'"x"')
    elif tamper == "remove-first":
        del lines[0]
    elif tamper == "swap":
        lines[0], lines[1] = lines[1], lines[0]
    else:
        lines[-1] = lines[-1][:-10]
    ledger.path.write_bytes(b"".join(lines))
    with pytest.raises(LedgerError):
        ledger.entries()
    with pytest.raises(LedgerError):
        ledger.append({"patient": "d"})


def test_another_key_does_not_verify(tmp_path: Path) -> None:
    _ledger(tmp_path).append({"patient": "a"})
    with pytest.raises(LedgerError):
        _ledger(tmp_path, bytes(32)).entries()


def test_a_read_verifies_only_what_was_appended_since_the_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each erasure reads the ledger (`append`; `find` too when it removed nothing, and
    `$erase` checks a request with `find`): verifying every entry again
    made a run's erasures cost the square of their number (docs/privacy.md). The entries
    another process appends are verified, and a change before them still found."""
    ledger, other = _ledger(tmp_path), _ledger(tmp_path)
    for n in range(50):
        other.append({"patient": f"p{n}", "reason": "asked"})
    assert len(ledger.entries()) == 50
    other.append({"patient": "r", "reason": "asked"})  # another worker's erasure
    macs: list[int] = []
    mac = ErasureLedger._mac
    monkeypatch.setattr(ErasureLedger, "_mac", lambda self, e: macs.append(1) or mac(self, e))
    assert ledger.find("r")["seq"] == 51  # type: ignore[index]
    ledger.append({"patient": "q", "reason": "asked"})
    assert ledger.find("q")["seq"] == 52  # type: ignore[index]
    assert len(macs) == 2  # r verified, q made: none of the 50 again
    lines = ledger.path.read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b'"p0"', b'"p9"')
    ledger.path.write_bytes(b"".join(lines))
    with pytest.raises(LedgerError, match="line 1"):
        ledger.find("r")


def test_an_intent_settled_while_they_are_listed_is_left_out(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process settles an intent between the listing of the intents and its read: it
    is gone, not an intent that does not verify."""
    ledger = ErasureLedger(tmp_path / "ledger", b"k" * 32)
    settled = {"patient": "x", "started": "2029-01-01T00:00:00Z"}
    kept = {"patient": "y", "started": "2029-01-02T00:00:00Z"}
    ledger.intend(settled)
    ledger.intend(kept)
    listed = Path.glob

    def glob(self: Path, pattern: str) -> Any:
        found = list(listed(self, pattern))
        monkeypatch.setattr(Path, "glob", listed)  # settling lists the intents too
        ledger.settle(settled)
        return iter(found)
    monkeypatch.setattr(Path, "glob", glob)
    assert [intent["patient"] for intent in ledger.intended()] == ["y"]
