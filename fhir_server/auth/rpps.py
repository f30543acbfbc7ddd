"""The RPPS register: the ANS public extract of health professionals, loaded by the operator
(`fhir-server rpps load FILE`), against which professionals' accounts are checked.

The extract ("PS_LibreAcces_Personne_activite") is UTF-8 text, one line per activity, fields
separated by `|`, a header line first. The columns read (1-based, as ANS numbers them):

| # | header | used as |
|---|---|---|
| 1 | Type d'identifiant PP | `8` = RPPS (other types, ADELI `0`, are skipped) |
| 2 | Identifiant PP | the 11-digit RPPS number |
| 8 | Nom d'exercice | family name |
| 9 | Prénom d'exercice | given name |
| 10 | Code profession | profession code (TRE_G15, e.g. 10 = médecin) |
| 11 | Libellé profession | profession label |

A load is a whole extract: numbers it holds are active; numbers a previous load held and this
one does not are kept as inactive (no longer listed), so that the refusal can say so.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .. import clock
from ..model.french_ids import rpps_number
from ..private_files import make_private

_RPPS_TYPE: Final = "8"
_HEADER: Final = "Type d'identifiant PP"
_COLUMNS: Final = 11  # the last column read is the 11th
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS professional (
    rpps TEXT PRIMARY KEY, family TEXT NOT NULL, given TEXT NOT NULL,
    profession_code TEXT NOT NULL, profession TEXT NOT NULL,
    active INTEGER NOT NULL, loaded_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS load (at TEXT NOT NULL, source TEXT NOT NULL, count INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Professional:
    """One professional of the register."""

    rpps: str
    family: str
    given: str
    profession_code: str
    profession: str
    active: bool
    loaded_at: str  # when the last extract listing them was loaded


@dataclass
class LoadReport:
    """What a load kept, dropped (number: the professionals no longer listed) and skipped."""

    active: int = 0
    dropped: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


class RppsRegister:
    """The register, in an owner-only SQLite file (`rpps.db` in the data directory)."""

    def __init__(self, path: Path) -> None:
        make_private(path)
        self._db = sqlite3.connect(path)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def load(self, lines: Iterable[str], source: str) -> LoadReport:
        """Replace the register with the extract's `lines`, in one transaction. ValueError
        (nothing changed) when the first line is not the extract's header, or when no line
        lists an RPPS professional (a truncated file would otherwise retire them all)."""
        rows = iter(enumerate(lines, start=1))
        first = next(rows, (1, ""))[1].lstrip("\ufeff")
        if not first.startswith(_HEADER):
            raise ValueError(f"{source}: not an RPPS extract (the first line is not the header "
                             f"starting with {_HEADER!r})")
        report, found = LoadReport(), {}
        for number, line in rows:
            fields = line.rstrip("\r\n").split("|")
            if len(fields) < _COLUMNS:
                if line.strip():
                    report.skipped.append((number, f"{len(fields)} fields, {_COLUMNS} expected"))
                continue
            if fields[0] != _RPPS_TYPE:
                continue
            rpps = fields[1] if rpps_number(fields[1]) == fields[1] else None
            if rpps is None:
                report.skipped.append((number, f"not an 11-digit RPPS number: {fields[1][:20]!r}"))
                continue
            found[rpps] = (fields[7], fields[8], fields[9], fields[10])
        if not found:
            raise ValueError(f"{source}: the extract lists no RPPS professional; the register is "
                             "unchanged")
        now = clock.instant()
        with self._db:
            before = {r for (r,) in self._db.execute("SELECT rpps FROM professional WHERE active = 1")}
            self._db.execute("UPDATE professional SET active = 0")
            self._db.executemany(
                "INSERT INTO professional VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (rpps) DO "
                "UPDATE SET family = excluded.family, given = excluded.given, profession_code = "
                "excluded.profession_code, profession = excluded.profession, active = 1, "
                "loaded_at = excluded.loaded_at",
                [(rpps, *values, now) for rpps, values in found.items()])
            self._db.execute("INSERT INTO load VALUES (?, ?, ?)", (now, source, len(found)))
        report.active, report.dropped = len(found), len(before - found.keys())
        return report

    def loaded_at(self) -> str | None:
        """When the last extract was loaded; None when none ever was."""
        row = self._db.execute("SELECT at FROM load ORDER BY rowid DESC LIMIT 1").fetchone()
        return str(row[0]) if row is not None else None

    def check(self, number: str) -> Professional:
        """The active professional with this RPPS number (or IDNPS, `8` + RPPS); ValueError
        saying why otherwise: no register loaded, malformed, unknown, no longer listed."""
        last = self.loaded_at()
        if last is None:
            raise ValueError("no RPPS register is loaded (fhir-server rpps load FILE)")
        rpps = rpps_number(number)
        if rpps is None:
            raise ValueError(f"{number!r} is not an RPPS number (11 digits, or 8 + RPPS)")
        row = self._db.execute("SELECT * FROM professional WHERE rpps = ?", (rpps,)).fetchone()
        if row is None:
            raise ValueError(f"RPPS number {rpps} is not in the RPPS register (loaded {last})")
        professional = Professional(*row[:5], active=bool(row[5]), loaded_at=row[6])
        if not professional.active:
            raise ValueError(f"RPPS number {rpps} is no longer in the RPPS register: the extract "
                             f"loaded {last} does not list it (last listed {row[6]})")
        return professional
