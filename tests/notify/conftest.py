"""A `schedule` on every store (tests/store/conftest.py's), opened in a temporary directory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from fhir_server.store.base import Store
from fhir_server.store.schedule import Scheduling
from tests.store.conftest import STORES, dispose


@pytest.fixture(params=sorted(STORES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await asyncio.to_thread(STORES[request.param], tmp_path)
    await opened.migrate()
    await opened.open()
    yield opened
    await dispose(opened)


def scheduling(store: Store) -> Scheduling:
    return cast(Scheduling, store)
