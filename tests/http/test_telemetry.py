"""The server configures no OpenTelemetry, so FastAPI's native telemetry is off: a request
does not ask the global tracer, meter and logger providers about themselves (a cost of every
request, docs/performance.md)."""

from __future__ import annotations

import pytest
from fastapi.telemetry import _asgi
from fastapi.testclient import TestClient


def test_a_request_does_not_consult_the_telemetry_providers(client: TestClient,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def consulted(*_: object) -> object:
        raise AssertionError("FastAPI's telemetry consulted a global provider")

    for name in ("get_tracer_provider", "get_meter_provider"):
        for module in (_asgi.trace, _asgi.metrics):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, consulted)
    monkeypatch.setattr(_asgi._logs, "get_logger_provider", consulted)
    assert client.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 201
    assert client.get("/fhir/Patient", params={"_count": "1"}).status_code == 200
