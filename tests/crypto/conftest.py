"""The store contract fixture, so the at-rest checks run on every store."""

from tests.store.conftest import store

__all__ = ["store"]
