"""Issue 17 §3 review of the investigator's counts (trials/inverse_counts.py, routed to its
owner; fails today): the daily snapshot that keeps two calls around one consent change from
singling out the newcomer lives in one process's memory, so a second worker
(FHIR_SERVER_WORKERS=2, a supported setting) or a restart computes it anew the same day."""

from __future__ import annotations

import weakref

import pytest

from fhir_server.trials import inverse_counts
from tests.trials.inverse_world import InverseWorld
from tests.trials.test_inverse_disclosure import _add_patient, _figures, world  # noqa: F401  (fixture)


def test_a_second_worker_answers_as_the_first_the_same_day(
        world: InverseWorld, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(inverse_counts, "BASE", 1)  # exact figures: the newcomer would show
    before = _figures(world)
    _add_patient(world.client, "newcomer", birth=False)
    # The next call lands on another worker process: its own, empty, memory.
    monkeypatch.setattr(inverse_counts, "_SNAPSHOTS", weakref.WeakKeyDictionary())
    assert _figures(world) == before
