"""The erasure ledger: one line per patient erased, kept with the key ring, never in a
database or a backup, so that `fhir-server restore` can erase again whoever an older backup
still holds (docs/backup-and-erasure.md).

A file of JSON lines, append-only (opened `O_APPEND`, under an exclusive lock, fsynced),
owner-only (0600). Each entry carries `prev`, the `mac` of the entry before it, and its own
`mac`: HMAC-SHA-256 under a key of the key ring over the entry's canonical JSON. So an entry
changed, removed or inserted breaks the chain, and only a holder of the key ring can write
one that verifies. What an entry holds: the patient's id, when, why, who asked, counts per
type; never any content of the erased resources.

An erasure is also announced before it starts: an *intent* file beside the ledger (one per
request, authenticated under the same key) says who is to be erased, by whom and why, and is
removed once the erasure's entry and AuditEvent are written. A process killed in between
leaves the intent, which the next start finishes (services/erase.py `reconcile`): otherwise
the store would have lost the patient while their data keys, ledger entry and AuditEvent
never came, and an older backup would bring them back.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..private_files import fsync_path
from .keyring import KeyProvider

GENESIS = "0" * 64


def ledger_key(provider: KeyProvider) -> bytes:
    """The ledger's MAC key: derived from the key ring's root as blind-index keys are, under a
    name no search parameter has (`Type.param`), so it survives KEK rotation."""
    return provider.index_key("erasure-ledger")


class LedgerError(Exception):
    """The ledger cannot be trusted or read: a broken chain, a bad MAC, a malformed line."""


def canonical(entry: dict[str, Any]) -> bytes:
    """The bytes an entry's MAC covers: the entry without `mac`, keys sorted, compact."""
    content = {k: v for k, v in entry.items() if k != "mac"}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class ErasureLedger:
    """The ledger file at `path`, its entries authenticated under `key` (32 bytes)."""

    def __init__(self, path: Path, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the ledger key must have 32 bytes or more")
        self.path = path
        self._key = key
        # The file's bytes verified last, and their entries: a later read verifies only the
        # lines appended since, once the bytes before them are found unchanged (a byte
        # comparison, where verifying every entry again cost each erasure time in proportion
        # to the erasures before it: 90 ms of CPU at 3,400 entries).
        self._seen: tuple[bytes, list[dict[str, Any]]] = (b"", [])

    def _mac(self, entry: dict[str, Any]) -> str:
        return hmac.new(self._key, canonical(entry), hashlib.sha256).hexdigest()

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Add `record` (JSON values) as the next entry; returns it with `seq`, `prev`, `mac`.
        Raises LedgerError, writing nothing, when the ledger does not verify."""
        return self.append_each([record])[0]

    def append_each(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`append` of each of `records`, in order, in one write (a group of erasures: the
        ledger, which grows with every erasure ever made, is read and verified once, and
        synced once, for them all)."""
        with self._locked() as fd:
            entries = self._read_verified(fd)
            added = []
            for record in records:
                entry = {**record, "seq": len(entries) + len(added) + 1,
                         "prev": added[-1]["mac"] if added else entries[-1]["mac"] if entries else GENESIS}
                entry["mac"] = self._mac(entry)
                added.append(entry)
            lines = b"".join(json.dumps(entry, sort_keys=True, ensure_ascii=False).encode() + b"\n"
                             for entry in added)
            os.write(fd, lines)
            os.fsync(fd)
            self._seen = (self._seen[0] + lines, [*entries, *added])
        return added

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, oldest first, verified; LedgerError if any does not verify. A missing
        file is an empty ledger."""
        if not self.path.exists():
            return []
        with self._locked() as fd:
            return self._read_verified(fd)

    def find(self, patient: str) -> dict[str, Any] | None:
        """The entry of Patient/`patient`'s latest erasure, if any (an id reused by a new
        Patient, or data written to an erased compartment later, is erased again)."""
        return next((e for e in reversed(self.entries()) if e.get("patient") == patient), None)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the erasures' lock, shared by every process on this ledger (`--workers`): one
        erasure, or one finishing of an intent, at a time. Its own file: the ledger's lock is
        taken and released by each read and append within."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    @property
    def _intents(self) -> Path:
        return self.path.with_name(self.path.name + ".intents")

    def intend(self, record: dict[str, Any]) -> None:
        """Announce an erasure (`record`: JSON values, its `patient` and `started` among
        them) before it starts, durably, until `settle`."""
        token = secrets.token_hex(8)
        entry = {**record, "token": token}
        entry["mac"] = self._mac(entry)
        self._intents.mkdir(mode=0o700, parents=True, exist_ok=True)
        # the patient's id in hex: an id such as '..' is a valid FHIR id, not a file name
        target = self._intents / f"{str(record['patient']).encode().hex()}.{token}.json"
        staging = target.with_suffix(".tmp")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(entry, sort_keys=True, ensure_ascii=False).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(staging, target)
        fsync_path(self._intents)

    def settle(self, intent: dict[str, Any]) -> None:
        """The erasure announced by `intent` is finished: forget it, and every intent for the
        same patient announced before it (this erasure swept after they started)."""
        self._forget(intent, lambda started: started <= str(intent["started"]))

    def withdraw(self, intent: dict[str, Any]) -> None:
        """The erasure announced by `intent` removed nothing (its condition refused it):
        forget it alone; those announced before it are still to be finished."""
        self._forget(intent, lambda started: started == str(intent["started"]))

    def _forget(self, intent: dict[str, Any], which: Callable[[str], bool]) -> None:
        """Remove the intents for `intent`'s patient whose start is `which`."""
        if not self._intents.is_dir():
            return
        for file in self._intents.glob(f"{str(intent['patient']).encode().hex()}.*.json"):
            try:
                started = json.loads(file.read_bytes()).get("started")
            except (OSError, ValueError):
                continue  # `intended` reports it
            if which(str(started)):
                file.unlink(missing_ok=True)
        fsync_path(self._intents)

    def intended(self) -> list[dict[str, Any]]:
        """The erasures announced and not settled (each with its `token`), oldest first;
        LedgerError if one does not verify (it was changed outside the server: a forged one
        would have the server erase a patient at start)."""
        if not self._intents.is_dir():
            return []
        intents = []
        for file in self._intents.glob("*.json"):
            try:
                entry = json.loads(file.read_bytes())
                ok = isinstance(entry, dict) and hmac.compare_digest(
                    str(entry.get("mac")), self._mac(entry))
            except FileNotFoundError:  # settled by another process since the listing
                continue
            except (OSError, ValueError):
                ok = False
            if not ok:
                raise LedgerError(f"the erasure intent {file.name} beside {self.path} does not "
                                  "verify: changed or added outside the server, or kept under "
                                  "another key ring")
            intents.append(entry)
        return sorted(intents, key=lambda entry: str(entry.get("started")))

    def _read_verified(self, fd: int) -> list[dict[str, Any]]:
        """The ledger's entries, verified (those read before, if their bytes are unchanged,
        are not verified again)."""
        data = _read_all(fd)
        seen, known = self._seen
        if not (seen and data.startswith(seen)):
            seen, known = b"", []
        entries = self._verified(_lines(data[len(seen):]), known)
        self._seen = (data, entries)
        return list(entries)

    def _verified(self, lines: list[bytes], before: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`before` (verified) followed by the entries of `lines`, each verified."""
        entries = list(before)
        previous = before[-1]["mac"] if before else GENESIS
        for number, line in enumerate(lines, start=len(before) + 1):
            try:
                entry = json.loads(line)
                mac = entry["mac"]
                ok = (isinstance(entry, dict) and entry.get("seq") == number
                      and entry.get("prev") == previous
                      and hmac.compare_digest(str(mac), self._mac(entry)))
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise LedgerError(f"the erasure ledger {self.path} does not verify at line "
                                  f"{number}: changed, removed or added outside the server, "
                                  "or kept under another key ring")
            entries.append(entry)
            previous = mac
        return entries

    @contextmanager
    def _locked(self) -> Iterator[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock


def _read_all(fd: int) -> bytes:
    # The file's size in one read where the lock lets no writer grow it (64 KiB at a time
    # cost a read call per 60 entries and a copy of the whole to join them); a read may
    # return less than asked, so until the end.
    chunks: list[bytes] = []
    at = 0
    while chunk := os.pread(fd, max(os.fstat(fd).st_size - at, 1 << 16), at):
        chunks.append(chunk)
        at += len(chunk)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if data and not data.endswith(b"\n"):
        raise LedgerError("the erasure ledger ends with a partial line (a write cut short); "
                          "restore it from the key ring's backup")
    return data


def _lines(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line]
