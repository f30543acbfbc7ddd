"""Shared fixtures: settings on a temporary store, the app, an HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import create_app
from fhir_server.settings import Settings

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, base_url="http://testserver/fhir")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (marked `anyio`) run on asyncio, as the server does."""
    return "asyncio"


def pytest_report_header() -> list[str]:
    """Say which stores the contract suite runs against (none is skipped silently)."""
    from tests.store.conftest import STORES

    return [f"stores under contract test: {', '.join(sorted(STORES))}"]
