"""The `store` fixture: every Store implementation runs the same contract suite.

SQLite always runs. Other stores join this list as they are built; the session prints which
stores ran (see tests/conftest.py), so none is silently absent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fhir_server.store.base import Store
from fhir_server.store.sqlite import SqliteStore

STORES: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda tmp: SqliteStore(tmp / "contract.db"),
}


@pytest.fixture(params=sorted(STORES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = STORES[request.param](tmp_path)
    await opened.open()
    yield opened
    await opened.close()
