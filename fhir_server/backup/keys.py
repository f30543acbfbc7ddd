"""`fhir-server keys backup DEST`: a copy of what opens the archives (the key ring, datakeys.db)
and of the erasure ledger, taken consistently, each file owner-only. It belongs apart from the
data archives: whoever holds both reads everything. docs/backup-and-erasure.md.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..crypto import DataKeys, KeyProvider, KeyRingError, LocalKeyRing

_ATTEMPTS = 5


def back_up_keys(ring: Path | KeyProvider, data_keys: Path, ledger: Path, dest: Path) -> list[Path]:
    """Copy `ring`, `data_keys` (SQLite's online backup: a consistent snapshot while servers
    write) and `ledger` (if any) into `dest`; the copies. The ring is copied again if a KEK
    rotation replaced it meanwhile (data keys re-wrapped under a KEK the copy lacks); the
    copies are checked to open each other. KeyRingError if they never agree. A `ring` that is
    a provider (an HSM) holds its KEKs itself, backed up by its own means: the data keys and
    the ledger are copied, and checked to open under it."""
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not isinstance(ring, Path):
        _snapshot(data_keys, dest / data_keys.name)
        copies = [dest / data_keys.name, *_ledger_copy(ledger, dest)]
        _opens(ring, copies[0])
        return copies
    ring_copy, keys_copy = dest / ring.name, dest / data_keys.name
    for _ in range(_ATTEMPTS):
        LocalKeyRing(ring)  # refuses a missing, malformed or too open ring
        before = _identity(ring)
        _write(ring_copy, ring.read_bytes())
        _snapshot(data_keys, keys_copy)
        if _identity(ring) == before:
            break
    else:
        raise KeyRingError(f"the key ring {ring} kept changing during the copy; try again")
    copies = [ring_copy, keys_copy, *_ledger_copy(ledger, dest)]
    _opens(LocalKeyRing(ring_copy), keys_copy)
    return copies


def _ledger_copy(ledger: Path, dest: Path) -> list[Path]:
    """The ledger copied into `dest`, if there is one (after datakeys.db: an erasure in
    between is in the ledger copy)."""
    if not ledger.exists():
        return []
    _write(dest / ledger.name, ledger.read_bytes())
    return [dest / ledger.name]


def _opens(provider: KeyProvider, keys_copy: Path) -> None:
    """KeyRingError unless `provider` opens the data keys copied."""
    copy = DataKeys(provider, keys_copy)
    try:
        copy.check()
    finally:
        copy.close()


def _identity(path: Path) -> tuple[int, int]:
    found = path.stat()
    return found.st_ino, found.st_mtime_ns


def _write(path: Path, content: bytes) -> None:
    """`content` into `path`, owner-only from its creation, replaced atomically."""
    spare = path.with_name(path.name + ".part")
    fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    os.replace(spare, path)


def _snapshot(source: Path, target: Path) -> None:
    """A consistent copy of the SQLite file `source` (the backup API), owner-only."""
    if not source.exists():
        raise KeyRingError(f"there are no data keys at {source}")
    spare = target.with_name(target.name + ".part")
    spare.unlink(missing_ok=True)
    os.close(os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(spare)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    os.replace(spare, target)
