"""The SQLite store: one file, WAL, one writer at a time (docs/storage.md)."""

from .store import SqliteStore

__all__ = ["SqliteStore"]
