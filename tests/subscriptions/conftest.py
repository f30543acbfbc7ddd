"""Apps whose subscriptions may notify the loopback receiver (tests/subscriptions/receiver.py)."""

from __future__ import annotations

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
    """Run dispatcher rounds in the app's event loop (the background loop may run others)."""
    for _ in range(rounds):
        client.portal.call(client.app.state.dispatcher.round)  # type: ignore[attr-defined,union-attr]
