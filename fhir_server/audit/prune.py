"""Pruning the audit trail past its retention, at a signed checkpoint, so that the hash chain
still verifies afterwards (docs/audit.md, "Pruning"; the periods: docs/privacy.md).

AuditEvents past their period (connection logs: sign-ins and token requests, DICOM 110114;
access logs: every other event) are removed from the audit store. Their ids are first noted
as **pruned**, each with its MAC, in the chain's file: a link still covering a pruned event
verifies from the event digests it kept, as for an event shredded by an erasure. Then the
longest run of links, from the first, whose every event is pruned is cut (the newest link
aside, which the next link is chained to): the links go, and a
**checkpoint** takes their place, the sequence number and digest of the last link cut, signed
(HMAC-SHA-256 under a key derived from the key ring, never stored). Verification starts from
the latest checkpoint instead of the chain's genesis. Without the key nobody can cut links or
note an event as pruned and still pass `audit verify`.

A pruning cut short is finished by the next: events noted but not removed are removed then,
links whose events are all gone are cut then.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from .. import clock
from ..search import Registry, default_registry, parse_query
from ..store.base import Store
from .chain import GENESIS, Link, Verdict, verify
from .events import command_event

DICOM = "http://dicom.nema.org/resources/ontology/DCM"
CONNECTION_TYPE = f"{DICOM}|110114"  # User Authentication: sign-ins and token requests
# Access logs are the events of RESTful interactions. The trail's other events (erasures,
# commands such as retention runs and the breach and disclosure registers, exports and
# notifications) account for what was done with the data and are not access logs.
ACCESS_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type|rest"
KINDS = ("connection-logs", "access-logs")
BATCH = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoint (
    seq    INTEGER PRIMARY KEY,  -- the last link cut
    digest TEXT NOT NULL,        -- its digest: where verification starts
    at     TEXT NOT NULL,
    events INTEGER NOT NULL,     -- AuditEvents those links covered
    mac    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pruned (
    event_id TEXT PRIMARY KEY,
    mac      TEXT NOT NULL
);
"""


@contextmanager
def _opened(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.executescript(_SCHEMA)
        yield conn
    finally:
        conn.close()


def saved(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The checkpoints and pruned notes of the chain file `path`, as stored (signed), for a
    backup: read after the links, so that a pruning in between only adds what covers them."""
    with _opened(path) as conn:
        return (conn.execute("SELECT seq, digest, at, events, mac FROM checkpoint ORDER BY seq").fetchall(),
                conn.execute("SELECT event_id, mac FROM pruned ORDER BY event_id").fetchall())


def put_back(path: Path, checkpoints: Sequence[Sequence[Any]], notes: Sequence[Sequence[Any]]) -> None:
    """Write a backup's checkpoints and pruned notes into the chain file `path` (a restore);
    their MACs are checked by `audit verify`, as any others."""
    with _opened(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR REPLACE INTO checkpoint (seq, digest, at, events, mac) "
                         "VALUES (?, ?, ?, ?, ?)", checkpoints)
        conn.executemany("INSERT OR REPLACE INTO pruned (event_id, mac) VALUES (?, ?)", notes)
        conn.execute("COMMIT")


def checkpoint_key(index_key: bytes) -> bytes:
    """The MAC key of checkpoints and pruned notes, from the key ring's derived key
    `index_key("audit-checkpoint")` (no search parameter has that name)."""
    return hashlib.sha256(b"audit-checkpoint\x00" + index_key).digest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    digest: str
    at: str
    events: int
    mac: str


@dataclass(frozen=True, slots=True)
class Pruned:
    """What a pruning did: events removed per kind, links cut."""

    events: dict[str, int]
    links: int


class Trimmer:
    """The audit trail's pruning: the audit `store` and the chain file `path`, MACs under `key`."""

    def __init__(self, store: Store, path: Path, key: bytes, registry: Registry | None = None) -> None:
        self.store = store
        self.path = path
        self._key = key
        self._registry = registry or default_registry()

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def _connection(self) -> AbstractContextManager[sqlite3.Connection]:
        return _opened(self.path)

    async def due(self, before: dict[str, date]) -> dict[str, list[str]]:
        """The ids of the AuditEvents of each kind recorded before its day in `before`."""
        found: dict[str, list[str]] = {}
        for kind, day in before.items():
            token = ("type", CONNECTION_TYPE if kind == "connection-logs" else ACCESS_TYPE)
            query, _ = parse_query("AuditEvent", [token, ("date", f"lt{day}"), ("_count", "1000")],
                                   self._registry)
            ids: list[str] = []
            page = await self.store.search(query)
            while True:
                ids += [v.id for v in page.matches]
                if page.next_cursor is None:
                    break
                page = await self.store.search(query, page.next_cursor)
            found[kind] = ids
        return found

    async def prune(self, due: dict[str, list[str]]) -> Pruned:
        """Note `due`'s events as pruned, remove them, and cut the links they alone covered."""
        ids = [id for kind in due.values() for id in kind]
        with self._connection() as conn:
            conn.executemany("INSERT OR IGNORE INTO pruned (event_id, mac) VALUES (?, ?)",
                             [(id, self._mac(f"pruned|{id}")) for id in ids])
            ids = [row[0] for row in conn.execute("SELECT event_id FROM pruned")]  # earlier ones too
        for start in range(0, len(ids), BATCH):
            query, _ = parse_query("AuditEvent", [("_id", ",".join(ids[start:start + BATCH]))],
                                   self._registry)
            await self.store.erase([query], ("Patient", "-"))
        return Pruned({kind: len(found) for kind, found in due.items()}, self._cut())

    def _cut(self) -> int:
        """Cut the links whose every event is pruned, from the first, the newest aside; how many."""
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                pruned = {row[0] for row in conn.execute("SELECT event_id FROM pruned")}
                last: tuple[int, str] | None = None
                covered: list[str] = []
                # The newest link is never cut: the next link is chained to it (chain.py).
                rows = conn.execute("SELECT seq, event_id, digest FROM link WHERE seq < "
                                    "(SELECT MAX(seq) FROM link) ORDER BY seq")
                for seq, event_ids, digest in rows:
                    events = event_ids.split(" ")
                    if not pruned.issuperset(events):
                        break
                    last, covered = (seq, digest), covered + events
                if last is None:
                    conn.execute("COMMIT")
                    return 0
                seq, digest = last
                before = conn.execute("SELECT events FROM checkpoint ORDER BY seq DESC LIMIT 1").fetchone()
                total = (before[0] if before else 0) + len(covered)
                at = clock.instant()
                conn.execute("INSERT INTO checkpoint (seq, digest, at, events, mac) VALUES (?, ?, ?, ?, ?)",
                             (seq, digest, at, total, self._mac(f"checkpoint|{seq}|{digest}|{at}|{total}")))
                cut = conn.execute("DELETE FROM link WHERE seq <= ?", (seq,)).rowcount
                conn.executemany("DELETE FROM pruned WHERE event_id = ?", [(id,) for id in covered])
                conn.execute("COMMIT")
                return cut
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def state(self) -> tuple[Checkpoint | None, set[str], list[str]]:
        """The latest checkpoint, the events noted as pruned, and the problems found: a
        checkpoint or a note whose MAC does not verify (not trusted: left out)."""
        problems: list[str] = []
        with self._connection() as conn:
            row = conn.execute("SELECT seq, digest, at, events, mac FROM checkpoint "
                               "ORDER BY seq DESC LIMIT 1").fetchone()
            notes = conn.execute("SELECT event_id, mac FROM pruned").fetchall()
        checkpoint = Checkpoint(*row) if row else None
        if checkpoint is not None and not hmac.compare_digest(checkpoint.mac, self._mac(
                f"checkpoint|{checkpoint.seq}|{checkpoint.digest}|{checkpoint.at}|{checkpoint.events}")):
            problems.append(f"the checkpoint at link {checkpoint.seq} is not signed by this "
                            "key ring (links before it may have been removed)")
            checkpoint = None
        pruned = set()
        for id, mac in notes:
            if hmac.compare_digest(mac, self._mac(f"pruned|{id}")):
                pruned.add(id)
            else:
                problems.append(f"AuditEvent/{id} is noted as pruned without a valid signature")
        return checkpoint, pruned, problems


def verify_pruned(links: Sequence[Link], events: dict[str, dict[str, object]],
                  stored_ids: Iterable[str], shredded: Iterable[str],
                  state: tuple[Checkpoint | None, set[str], list[str]]) -> tuple[Verdict, int]:
    """`chain.verify` from the latest checkpoint, pruned events counting as present; the
    verdict and the number of pruned events still covered by a link."""
    checkpoint, pruned, problems = state
    start, first = (checkpoint.digest, checkpoint.seq + 1) if checkpoint else (GENESIS, 1)
    kept = [link for link in links if link.seq >= first]
    if kept and kept[0].seq != first:
        problems = [*problems, f"links {first}..{kept[0].seq - 1} are missing"]
    shredded = set(shredded)
    verdict = verify(kept, events, stored_ids, shredded | pruned, previous=start)
    covered = {id for link in kept for id in link.event_ids}
    verdict.shredded -= len(pruned & (covered - shredded))
    verdict.problems[:0] = problems
    return verdict, len(pruned & covered)


def retention_event(counts: dict[str, int], kept: int, *, dry_run: bool, operator: str,
                    failed: int = 0) -> dict[str, object]:
    """The AuditEvent of a retention run: per `rule step`, how many (no id, no name); a dry
    run says so; actions that failed make it a minor failure."""
    details = [{"type": "dry run", "valueString": "yes" if dry_run else "no"},
               {"type": "kept under a legal hold", "valueString": str(kept)},
               *({"type": name, "valueString": str(n)} for name, n in counts.items())]
    return command_event(command="retention run", action="E" if dry_run else "D",
                         recorded=clock.instant(), operator=operator, entities=[{
                             "name": "retention policy", "detail": details,
                             "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role",
                                      "code": "20", "display": "Job"}}],
                         problem=f"{failed} actions failed" if failed else None)
