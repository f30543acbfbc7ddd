"""The application on a real uvicorn server in a thread, and the steps of an app launch over
HTTP: authorization request, sign-in, second factor, consent, code exchange.

The launch steps take any httpx client (a TestClient or a client of the live server) that
carries the application as `.app`, so the same steps run in-process and over the network.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2 as httpx
import pyotp
import uvicorn
from fastapi import FastAPI

from fhir_server.app import create_app
from fhir_server.auth.registry import Registry
from fhir_server.auth.users import Users
from fhir_server.settings import Settings

PASSWORD = "correct horse battery staple"
REDIRECT = "https://portal.example.org/callback"


class LiveClient(httpx.Client):
    """An HTTP client of a running server, with the application it serves as `.app`."""

    app: FastAPI


@contextmanager
def live_server(data_dir: Path, **settings: Any) -> Iterator[LiveClient]:
    """The application on a free loopback port until the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    base = f"http://127.0.0.1:{port}"
    app = create_app(Settings(data_dir=data_dir, base_url=f"{base}/fhir", **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    client = LiveClient(base_url=base, timeout=30)
    client.app = app
    try:
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=20)


def registry(client: Any) -> Registry:
    """The authorization server's registry behind `client`."""
    found: Registry = client.app.state.oauth.registry
    return found


def audience(client: Any) -> str:
    return str(client.app.state.settings.base_url).rstrip("/")


def token_url(client: Any) -> str:
    return f"{client.app.state.settings.auth_url}/token"


def new_user(client: Any, fhir_user: str) -> str:
    """A fresh user for `fhir_user`: one sign-in each, since a TOTP code works once and a test
    module signs in more often than codes change."""
    username = f"user-{secrets.token_hex(4)}"
    Users(registry(client)).add(username, PASSWORD, fhir_user)
    return username


def challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def pending_of(html: str) -> str:
    found = re.search(r'name="pending" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def authorize(client: Any, verifier: str, client_id: str, scope: str, **overrides: str) -> Any:
    """The authorization request (not followed)."""
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
              "scope": scope, "state": "s-123", "aud": audience(client),
              "code_challenge": challenge(verifier), "code_challenge_method": "S256",
              "nonce": "n-456", **overrides}
    params = {k: v for k, v in params.items() if v is not None}
    return client.get(f"/auth/authorize?{urlencode(params)}", follow_redirects=False)


def second_factor(client: Any, pending: str, username: str, page: str) -> Any:
    """Post the TOTP code (the enrolment key from `page` the first time); a code works once,
    so a second sign-in within the same 30 s takes the next one."""
    secret = re.search(r'id="secret">([A-Z2-7]+)<', page)
    totp = pyotp.TOTP(secret.group(1) if secret else Users(registry(client)).totp_secret(username))
    answer = client.post("/auth/totp", data={"pending": pending, "code": totp.now()},
                         follow_redirects=False)
    if answer.status_code == 401:
        answer = client.post("/auth/totp", data={"pending": pending,
                                                 "code": totp.at(time.time() + totp.interval)},
                             follow_redirects=False)
    return answer


def sign_in(client: Any, verifier: str, client_id: str, scope: str, username: str,
            decision: str = "approve", **overrides: str) -> Any:
    """Through the pages; the answer is the redirect back to the app."""
    login = authorize(client, verifier, client_id, scope, **overrides)
    assert login.status_code == 200, login.text
    pending = pending_of(login.text)
    second = client.post("/auth/login", data={"pending": pending, "username": username,
                                              "password": PASSWORD})
    assert second.status_code == 200, second.text
    consent = second_factor(client, pending, username, second.text)
    assert consent.status_code == 200, consent.text
    return client.post("/auth/consent", data={"pending": pending, "decision": decision},
                       follow_redirects=False)


def code_of(redirect: Any) -> str:
    assert redirect.status_code == 302, redirect.text
    location = urlsplit(redirect.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["s-123"]
    return query["code"][0]


def redirect_error(response: Any) -> str:
    """The `error` a redirect back to the app carries."""
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["error"][0]
