"""The MongoDB store: replica set or sharded cluster, multi-document transactions (docs/storage.md)."""

from .store import MongoStore

__all__ = ["MongoStore"]
