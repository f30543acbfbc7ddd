"""Running the re-match job's look in a test app's event loop (trials/rematch.py), on a
clock the test moves: a MongoDB store's history lists only versions older than its settling
time (store/mongo/store.py), so each look first moves the clock past it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fhir_server import clock
from fhir_server.trials import rematch

SETTLED = 26  # seconds: store/mongo/store.py's SETTLE_SECONDS and one


@pytest.fixture
def moving() -> Iterator[clock.Frozen]:
    """The clock, stopped at the real time; `look` moves it."""
    with clock.frozen(clock.now()) as frozen:
        yield frozen


def look(client: TestClient, moving: clock.Frozen) -> rematch.Report:
    """One look of the job, as the server's task runs it (waking the dispatcher)."""
    moving.advance(SETTLED)
    state = client.app.state  # type: ignore[attr-defined]
    return client.portal.call(  # type: ignore[union-attr]
        rematch.look, state.context, state.dispatcher.watch.changed.set)
