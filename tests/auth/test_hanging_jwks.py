"""A registered client's JWKS URL that hangs must not hold up the token endpoint: anyone can
name that client in an assertion (remote_keys.py: short fetch, failures remembered, at most
MAX_WAITERS requests wait for another's fetch)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from fhir_server.auth import remote_keys
from tests.auth.conftest import es384
from tests.auth.live import LiveClient, audience, live_server, registry, token_url


class Hanging:
    """A server that accepts connections and never answers; it counts them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/jwks"
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.connections.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    server = Hanging()
    yield server
    server.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveClient]:
    with live_server(tmp_path) as client:
        yield client


def test_a_hanging_jwks_url_does_not_stall_other_clients(live: LiveClient,
                                                         hanging: Hanging) -> None:
    stalled = es384("stalled")
    registry(live).add_backend_client(stalled.client_id, "system/Patient.rs",
                                      jwks_uri=hanging.url)
    good = es384("good")
    registry(live).add_backend_client(good.client_id, "system/Patient.rs", jwks=good.jwks())
    # Unauthenticated junk: assertions naming the stalled client, signed by anyone.
    junk = [stalled.form("system/Patient.rs", audience=token_url(live)) for _ in range(80)]
    limits = httpx.Limits(max_connections=100)
    with httpx.Client(base_url=str(live.base_url), timeout=30, limits=limits) as attacker, \
            ThreadPoolExecutor(80) as pool:
        attacks = [pool.submit(attacker.post, "/auth/token", data=form) for form in junk]
        time.sleep(0.5)
        started = time.monotonic()
        try:
            answer = live.post("/auth/token", timeout=10, data=good.form(
                "system/Patient.rs", audience=token_url(live))).status_code
        except httpx.TimeoutException:
            answer = None
        assert answer == 200 and time.monotonic() - started < 1.5
        assert live.get("/fhir/metadata", timeout=10).status_code == 200
        answers = [a.result() for a in attacks]
    assert {a.json()["error"] for a in answers} == {"invalid_client"}
    # One fetch; the failure is remembered, so more junk makes no new connection.
    assert len(hanging.connections) == 1
    again = live.post("/auth/token", data=stalled.form("system/Patient.rs",
                                                       audience=token_url(live)))
    assert again.json()["error"] == "invalid_client"
    assert len(hanging.connections) == 1


def test_a_fetch_gives_up_after_the_fetch_timeout(hanging: Hanging) -> None:
    keys = remote_keys.RemoteKeySets()
    started = time.monotonic()
    with pytest.raises(OSError):
        keys.get(hanging.url)
    assert time.monotonic() - started < remote_keys.FETCH_TIMEOUT + 1
    # Remembered: refused at once, no new connection.
    started = time.monotonic()
    with pytest.raises(OSError):
        keys.get(hanging.url)
    assert time.monotonic() - started < 0.1
    assert len(hanging.connections) == 1


def test_a_hanging_trusted_issuer_does_not_stall_other_requests(tmp_path: Path, hanging: Hanging) -> None:
    # Verifying an external issuer's token may fetch its keys (up to FETCH_TIMEOUT): off the
    # event loop, so the server answers other requests meanwhile.
    issuer = "https://idp.example.org/realms/chu"
    with live_server(tmp_path, trusted_issuers=[{"issuer": issuer, "jwks_uri": hanging.url}]) as live, \
            ThreadPoolExecutor(1) as pool:
        key = ECKey.generate_key("P-256", private=True, auto_kid=True)
        claims = {"iss": issuer, "aud": audience(live), "sub": "svc", "exp": int(time.time()) + 300}
        token = jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)
        stalled = pool.submit(live.get, "/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
        while not hanging.connections:
            time.sleep(0.01)
        started = time.monotonic()
        assert live.get("/fhir/metadata?_summary=true", timeout=10).status_code == 200
        assert time.monotonic() - started < remote_keys.FETCH_TIMEOUT / 2
        assert not stalled.done()
        assert stalled.result().status_code == 401


def test_requests_waiting_for_a_failing_fetch_all_get_its_error(hanging: Hanging) -> None:
    keys = remote_keys.RemoteKeySets()
    started = time.monotonic()
    with ThreadPoolExecutor(remote_keys.MAX_WAITERS + 3) as pool:
        tries = [pool.submit(keys.get, hanging.url) for _ in range(remote_keys.MAX_WAITERS + 3)]
        errors = [t.exception() for t in tries]
    assert time.monotonic() - started < remote_keys.FETCH_TIMEOUT + 1.5
    assert all(isinstance(e, OSError) for e in errors)
    # The fetcher's waiters share its error; requests beyond MAX_WAITERS are refused at once.
    refused = [e for e in errors if "too many requests" in str(e)]
    shared = {str(e) for e in errors if e not in refused}
    assert len(refused) == 2
    assert len(shared) == 1 and "could not be fetched" in shared.pop()
    assert len(hanging.connections) == 1
