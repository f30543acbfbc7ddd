"""The RPPS register (auth/rpps.py) and `fhir-server rpps load` / `user add --rpps`: unknown,
no longer listed or malformed numbers are refused with the reason; the extract is the ANS
pipe-separated format (fictitious extract: fhir_server/demo/rpps-extract.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server import cli
from fhir_server.auth.rpps import RppsRegister

RPPS_EXTRACT = Path(cli.__file__).parent / "demo" / "rpps-extract.txt"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def register(tmp_path: Path) -> RppsRegister:
    return RppsRegister(tmp_path / "rpps.db")


def lines(*rows: str) -> list[str]:
    return RPPS_EXTRACT.read_text(encoding="utf-8").splitlines(keepends=True)[:1] + [
        r + "\n" for r in rows]


def test_the_fictitious_extract_loads(register: RppsRegister) -> None:
    with RPPS_EXTRACT.open(encoding="utf-8") as extract:
        report = register.load(extract, "extract")
    assert (report.active, report.dropped, report.skipped) == (4, 0, [])  # ADELI row skipped
    claire = register.check("10001234567")
    assert (claire.family, claire.given, claire.profession_code, claire.profession) == (
        "Martin", "Claire", "10", "Médecin")
    assert register.check("810001234567").rpps == "10001234567"  # IDNPS


def test_no_register_loaded_refuses(register: RppsRegister) -> None:
    with pytest.raises(ValueError, match="no RPPS register is loaded"):
        register.check("10001234567")


def test_unknown_and_malformed_numbers_are_refused(register: RppsRegister) -> None:
    register.load(lines("8|10001234567|810001234567|||||Martin|Claire|10|Médecin|"), "x")
    with pytest.raises(ValueError, match="not in the RPPS register"):
        register.check("10007654329")
    with pytest.raises(ValueError, match="not an RPPS number"):
        register.check("1000123456")


def test_a_number_a_later_extract_drops_is_no_longer_listed(register: RppsRegister) -> None:
    register.load(lines("8|10001234567|810001234567|||||Martin|Claire|10|Médecin|",
                        "8|10007654321|810007654321|||||Nguyen|Thomas|10|Médecin|"), "first")
    report = register.load(lines("8|10007654321|810007654321|||||Nguyen|Thomas|10|Médecin|"), "second")
    assert (report.active, report.dropped) == (1, 1)
    with pytest.raises(ValueError, match="no longer in the RPPS register"):
        register.check("10001234567")
    assert register.check("10007654321").active


def test_bad_lines_are_skipped_with_their_line_number(register: RppsRegister) -> None:
    report = register.load(lines("8|10001234567|810001234567|||||Martin|Claire|10|Médecin|",
                                 "8|12AB|||||||x|y|10|z|", "8|too|few"), "x")
    assert report.active == 1
    assert [n for n, _ in report.skipped] == [3, 4]


def test_a_file_without_the_header_changes_nothing(register: RppsRegister) -> None:
    register.load(lines("8|10001234567|810001234567|||||Martin|Claire|10|Médecin|"), "x")
    with pytest.raises(ValueError, match="not an RPPS extract"):
        register.load(["8|10007654321|810007654321|||||Nguyen|Thomas|10|Médecin|\n"], "bad")
    assert register.check("10001234567").active


def test_an_extract_listing_no_professional_changes_nothing(register: RppsRegister) -> None:
    """A truncated download (the header alone, or only other identifier types) would mark
    every professional no longer listed and refuse them all: it is refused instead."""
    register.load(lines("8|10001234567|810001234567|||||Martin|Claire|10|Médecin|"), "x")
    for extract in (lines(), lines("0|123456789|0123456789|||||Dupont|Jean|10|Médecin|")):
        with pytest.raises(ValueError, match="lists no RPPS professional"):
            register.load(extract, "truncated")
    assert register.check("10001234567").active


def test_cli_load_and_user_add_refuse_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path))
    assert cli.main(["user", "add", "a", "--rpps", "10001234567", "--password", PASSWORD]) == 2
    assert "no RPPS register is loaded" in capsys.readouterr().err
    assert cli.main(["rpps", "load", str(RPPS_EXTRACT)]) == 0
    assert "4 professionals active" in capsys.readouterr().out
    assert cli.main(["user", "add", "b", "--rpps", "99999999999", "--password", PASSWORD]) == 2
    assert "99999999999 is not in the RPPS register" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("not|an|extract\n")
    assert cli.main(["rpps", "load", str(bad)]) == 2
    assert "not an RPPS extract" in capsys.readouterr().err
    assert (tmp_path / "rpps.db").stat().st_mode & 0o077 == 0
