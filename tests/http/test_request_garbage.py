"""A request leaves no reference cycle behind: what it made goes when its last reference
does, not when the garbage collector next walks the heap (a cost of every request,
docs/performance.md, "Fifteenth session")."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.http import audit


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_collector")
@pytest.mark.parametrize("path", ["/fhir/Patient/{id}", "/fhir/Patient?_id={id}", "/fhir/Patient/unknown"])
def test_a_request_leaves_no_reference_cycle(client: TestClient, monkeypatch: pytest.MonkeyPatch,
                                             path: str) -> None:
    """The request's store (what its state and its audit record both reach) is gone once the
    response is: without the collector, which is off."""
    id = client.post("/fhir/Patient", json={"resourceType": "Patient"}).json()["id"]
    stores: list[weakref.ref[Any]] = []
    begin = audit.auditing.begin

    def kept(*args: Any, **kwargs: Any) -> Any:
        record = begin(*args, **kwargs)
        stores.append(weakref.ref(record.store))
        return record

    monkeypatch.setattr(audit.auditing, "begin", kept)
    client.get(path.format(id=id))
    [store] = stores
    assert store() is None
