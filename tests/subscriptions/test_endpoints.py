"""Where notifications may go: no internal address, however written or resolved (SSRF), and an
allow-list compared by scheme, host, port and path segments, not by string prefix."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server.subscriptions.criteria import Plan
from fhir_server.subscriptions.delivery import Sender
from tests.http.helpers import send
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery import subscription

INTERNAL = ["https://127.0.0.1/x", "https://[::1]/x", "https://0.0.0.0/x",
            "https://169.254.169.254/latest/meta-data", "https://2130706433/x",
            "https://[::ffff:127.0.0.1]/x", "https://localhost/x", "https://localhost./x",
            "https://10.0.0.1/x", "https://192.168.1.1/x", "https://100.64.0.1/x", "https://127.1/x",
            "https://0x7f000001/x", "https://[fe80::1]/x", "https://224.0.0.1/x", "https://[2002:7f00:1::]/x",
            "http://localhost./x", "http://[::ffff:7f00:1]/x", "http://0.0.0.0/x", "http://2130706433/x",
            "http://127.0.0.1.nip.io/x"]


def _refused(client: TestClient, endpoint: str) -> None:
    response = send(client, "POST", "/fhir/Subscription", subscription(endpoint))
    assert response.status_code == 400, f"{endpoint}: {response.status_code}"
    assert response.json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"]


@pytest.mark.parametrize("endpoint", INTERNAL)
def test_internal_addresses_are_refused(client: TestClient, endpoint: str) -> None:
    _refused(client, endpoint)
    assert client.get("/fhir/Subscription").json().get("total", 0) == 0


def test_a_name_resolving_to_an_internal_address_is_refused(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def rebound(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "hooks.example.org" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    _refused(client, "https://hooks.example.org/h")


def test_the_allow_list_compares_host_port_and_path(client: TestClient) -> None:
    watch = client.app.state.dispatcher.watch  # type: ignore[attr-defined]
    watch.policy = dataclasses.replace(watch.policy, allowed=("https://hooks.example.org/fhir",))
    for endpoint in ("https://hooks.example.org/fhir", "https://hooks.example.org:443/fhir/a",
                     "https://HOOKS.example.org/fhir/"):
        assert send(client, "POST", "/fhir/Subscription", subscription(endpoint)).status_code == 201, endpoint
    for endpoint in ("https://hooks.example.org.evil.net/fhir", "https://hooks.example.org/fhirx",
                     "https://hooks.example.org:8443/fhir", "http://hooks.example.org/fhir"):
        _refused(client, endpoint)


def _plan(endpoint: str) -> Plan:
    return Plan(id="s", status="active", topic=None, resource_type="Patient", filters=(), special=(),
                endpoint=endpoint, headers=(), content="id-only", mime_type=None, heartbeat=None,
                timeout=2.0, max_count=1, end=None)


def test_each_send_checks_the_address_again(hook: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored while public, resolving to loopback at send time (DNS rebinding): not sent."""
    port = int(hook.url.rsplit(":", 1)[1].split("/")[0])
    real = socket.getaddrinfo

    def rebound(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "hooks.example.org" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebound)

    async def sent(sender: Sender, endpoint: str) -> int:
        try:
            return await sender.send(_plan(endpoint), None)
        finally:
            await sender.close()

    assert asyncio.run(sent(Sender(), f"https://hooks.example.org:{port}/hook")) == 0
    assert asyncio.run(sent(Sender(), hook.url)) == 0  # loopback, not in development mode
    assert not hook.received
    assert asyncio.run(sent(Sender(loopback_http=True), f"http://localhost:{port}/hook")) == 200
    [request] = hook.received
    assert request.headers["Host"] == f"localhost:{port}"


def test_the_http_client_is_made_at_the_first_send_and_closed_once() -> None:
    sender = Sender()

    async def close_twice() -> None:
        await sender.close()  # never sent: nothing to close
        assert sender._client is None
        client = sender.client
        assert sender.client is client  # one client for every send
        await sender.close()
        assert client.is_closed and sender._client is None
        await sender.close()

    asyncio.run(close_twice())
