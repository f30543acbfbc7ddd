"""An error never costs a client its connection: after a 500 the same keep-alive connection
answers the next request (RFC 9112 §9.3; without `Connection: close` the client may reuse it).

Over real HTTP against uvicorn in a thread, as httpx's own tests run a server.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from fhir_server.app import create_app
from fhir_server.services import crud
from fhir_server.settings import Settings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    port = _free_port()
    settings = Settings(data_dir=tmp_path, base_url=f"http://127.0.0.1:{port}/fhir", auth="off",
                        publish_definitions=False)
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None,
                            lifespan="on")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    running.should_exit = True
    thread.join(10)


def test_connection_survives_an_unexpected_error(server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the store fell over")

    monkeypatch.setattr(crud, "read", broken)
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    try:
        connection.request("GET", "/fhir/Patient/p1")
        first = connection.getresponse()
        body = first.read()
        assert first.status == 500
        assert b'"exception"' in body and b"the store fell over" not in body
        assert first.getheader("connection") != "close"
        connection.request("GET", "/fhir/metadata?_summary=text")  # the same socket
        second = connection.getresponse()
        second.read()
        assert second.status == 200
    finally:
        connection.close()


def test_connection_survives_client_errors(server: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    try:
        for _ in range(3):
            connection.request("POST", "/fhir/Patient", body=b"{not json",
                               headers={"Content-Type": "application/fhir+json"})
            response = connection.getresponse()
            response.read()
            assert response.status == 400
    finally:
        connection.close()
