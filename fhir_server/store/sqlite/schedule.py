"""The schedule (store/schedule.py) in the SQLite file: tables `schedule` and
`notification_preference` (schema.py). Claims run in the store's write transactions, so
processes sharing the file never claim the same item twice."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ...crypto import BodyCodec
from ..schedule import DONE, Due, State, opened_item, opened_preference, sealed_item, sealed_preference

T = TypeVar("T")
Run = Callable[[Callable[[sqlite3.Connection], T]], Awaitable[T]]

_FIELDS = "key, due, body, state, attempts, owner, lease"
_DUE = ("(state = 'pending' AND due <= :now) OR (state = 'claimed' AND lease <= :now)")


class SqliteSchedule:
    """A Schedule; `read` runs work on a reader connection, `write` in a write transaction."""

    def __init__(self, read: Run[Any], write: Run[Any], codec: BodyCodec) -> None:
        self._read = read
        self._write = write
        self.codec = codec

    def _due(self, row: Sequence[Any]) -> Due:
        return Due(row[0], row[1], opened_item(self.codec, row[0], row[2]), *row[3:])

    async def enqueue(self, items: Sequence[tuple[str, int, bytes]]) -> list[str]:
        sealed = [(key, due, sealed_item(self.codec, key, body)) for key, due, body in items]

        def work(conn: sqlite3.Connection) -> list[str]:
            added = []
            for key, due, body in sealed:
                cursor = conn.execute("INSERT OR IGNORE INTO schedule (key, due, body, state, "
                                      "attempts) VALUES (?, ?, ?, 'pending', 0)", (key, due, body))
                if cursor.rowcount:
                    added.append(key)
            return added

        return list(await self._write(work))

    async def claim(self, now: int, lease: int, owner: str, limit: int) -> list[Due]:
        def work(conn: sqlite3.Connection) -> list[Any]:
            keys = [row[0] for row in conn.execute(
                f"SELECT key FROM schedule WHERE {_DUE} ORDER BY due, key LIMIT :limit",
                {"now": now, "limit": limit})]
            conn.executemany("UPDATE schedule SET state = 'claimed', owner = ?, lease = ?, "
                             "attempts = attempts + 1 WHERE key = ?",
                             [(owner, lease, key) for key in keys])
            return [conn.execute(f"SELECT {_FIELDS} FROM schedule WHERE key = ?", (key,)).fetchone()
                    for key in keys]

        return [self._due(row) for row in await self._write(work)]

    async def _update(self, sql: str, params: Sequence[Any]) -> int:
        return int(await self._write(lambda conn: conn.execute(sql, params).rowcount))

    async def _end(self, key: str, owner: str, state: State) -> bool:
        return bool(await self._update(
            "UPDATE schedule SET state = ?, lease = NULL "
            "WHERE key = ? AND state = 'claimed' AND owner = ?", (state, key, owner)))

    async def finish(self, key: str, owner: str) -> bool:
        return await self._end(key, owner, "sent")

    async def postpone(self, key: str, owner: str, due: int) -> bool:
        return bool(await self._update(
            "UPDATE schedule SET state = 'pending', due = ?, owner = NULL, lease = NULL "
            "WHERE key = ? AND state = 'claimed' AND owner = ?", (due, key, owner)))

    async def set_aside(self, key: str, owner: str) -> bool:
        return await self._end(key, owner, "failed")

    async def failed(self) -> list[Due]:
        rows = await self._read(lambda conn: conn.execute(
            f"SELECT {_FIELDS} FROM schedule WHERE state = 'failed' ORDER BY key").fetchall())
        return [self._due(row) for row in rows]

    async def cancel(self, prefix: str) -> int:
        return await self._update(
            "UPDATE schedule SET state = 'cancelled', lease = NULL WHERE substr(key, 1, ?) = ? "
            "AND state IN ('pending', 'claimed')", (len(prefix), prefix))

    async def items(self, prefix: str) -> list[Due]:
        rows = await self._read(lambda conn: conn.execute(
            f"SELECT {_FIELDS} FROM schedule WHERE substr(key, 1, ?) = ? ORDER BY key",
            (len(prefix), prefix)).fetchall())
        return [self._due(row) for row in rows]

    async def preference(self, person: str) -> bytes | None:
        row = await self._read(lambda conn: conn.execute(
            "SELECT body FROM notification_preference WHERE person = ?", (person,)).fetchone())
        return opened_preference(self.codec, person, row[0]) if row else None

    async def purge(self, keys: Sequence[str]) -> int:
        def work(conn: sqlite3.Connection) -> int:
            return sum(conn.execute("DELETE FROM schedule WHERE key = ? AND state IN (?, ?)",
                                    (key, *DONE)).rowcount for key in keys)

        return int(await self._write(work))

    async def forget(self, person: str, keys: Sequence[str]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM notification_preference WHERE person = ?", (person,))
            conn.executemany("DELETE FROM schedule WHERE key = ?", [(key,) for key in keys])

        await self._write(work)

    async def set_preference(self, person: str, body: bytes) -> None:
        sealed = sealed_preference(self.codec, person, body)
        await self._update("INSERT OR REPLACE INTO notification_preference (person, body) "
                           "VALUES (?, ?)", (person, sealed))
