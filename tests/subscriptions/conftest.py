"""Apps whose subscriptions may notify the loopback receiver (tests/subscriptions/receiver.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fhir_server.settings import Settings
from tests.subscriptions.receiver import Receiver, receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"subscription_loopback_http": True})


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as running:
        yield running


def dispatch(client: TestClient, rounds: int = 1) -> None:
    """Run dispatcher rounds in the app's event loop (the background loop may run others),
    each until every subscription it serves is done (a round waits a second at most)."""
    dispatcher = client.app.state.dispatcher  # type: ignore[attr-defined]

    async def served() -> None:
        await dispatcher.round()
        await asyncio.gather(*dispatcher.serving.values())

    for _ in range(rounds):
        client.portal.call(served)  # type: ignore[union-attr]
