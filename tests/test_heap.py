"""The cyclic collector kept out of a stretch (fhir_server/heap.py), and given back as it was."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from fhir_server.heap import uncollected


@pytest.fixture
def collector() -> Iterator[None]:
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_no_collection_inside_and_the_collector_back_after(collector: None) -> None:
    gc.enable()
    with uncollected():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), uncollected():
        raise RuntimeError
    assert gc.isenabled()


def test_a_stretch_inside_another_leaves_the_collector_off(collector: None) -> None:
    gc.enable()
    with uncollected():
        with uncollected():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    with uncollected():
        pass
    assert not gc.isenabled()
