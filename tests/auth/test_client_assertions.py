"""Client assertions (RFC 7523 private_key_jwt, SMART Backend Services "Authenticating to the
Token endpoint") over real HTTP: a `jku` other than the registered JWKS URL is refused; the
client's JWKS is cached as its Cache-Control says and fetched again once for an unknown `kid`;
header parameters not understood are ignored unless critical (RFC 7515 §4)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from joserfc.jwk import ECKey

from fhir_server.auth import remote_keys
from tests.auth.conftest import Backend, es384
from tests.auth.live import LiveClient, live_server, registry, token_url


class Published:
    """A client's keys, served at a local URL with the Cache-Control a test chooses."""

    def __init__(self, backend: Backend) -> None:
        self.keys = [backend.key]
        self.cache_control: str | None = None
        self.fetches = 0
        self.failing = False  # answer 503

    def body(self) -> bytes:
        self.fetches += 1
        return orjson.dumps({"keys": [k.as_dict(private=False) for k in self.keys]})


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveClient]:
    with live_server(tmp_path_factory.mktemp("assertions")) as client:
        yield client


@pytest.fixture
def published(live: LiveClient) -> Iterator[tuple[Backend, Published, str]]:
    """A backend client registered with a JWKS URL served locally."""
    backend = es384(f"site-{id(object())}")
    keys = Published(backend)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = keys.body()
            self.send_response(503 if keys.failing else 200)
            self.send_header("Content-Type", "application/json")
            if keys.cache_control:
                self.send_header("Cache-Control", keys.cache_control)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/jwks"
    registry(live).add_backend_client(backend.client_id, "system/Patient.rs", jwks_uri=url)
    yield backend, keys, url
    httpd.shutdown()
    httpd.server_close()


def _token(live: LiveClient, backend: Backend, **options: Any) -> Any:
    return live.post("/auth/token", data=backend.form(
        "system/Patient.rs", audience=token_url(live), **options))


def _refused(answer: Any) -> bool:
    return answer.status_code in (400, 401) and answer.json()["error"] == "invalid_client"


def test_a_jku_other_than_the_registered_url_is_refused(
        live: LiveClient, published: tuple[Backend, Published, str]) -> None:
    backend, _, url = published
    assert _token(live, backend, header={"jku": url}).status_code == 200
    assert _refused(_token(live, backend, header={"jku": "https://attacker.example.org/jwks"}))
    inline = es384("inline-keys")
    registry(live).add_backend_client(inline.client_id, "system/Patient.rs", jwks=inline.jwks())
    assert _refused(_token(live, inline, header={"jku": url}))


def test_no_store_keys_are_fetched_at_each_use(
        live: LiveClient, published: tuple[Backend, Published, str]) -> None:
    """A key the client removed from a `no-store` JWKS stops working at once."""
    backend, keys, _ = published
    keys.cache_control = "no-store"
    assert _token(live, backend).status_code == 200
    replacement = ECKey.generate_key("P-384", private=True, auto_kid=True)
    keys.keys = [replacement]
    assert _refused(_token(live, backend))
    assert _token(live, backend, key=replacement).status_code == 200


def test_no_cache_keys_are_fetched_at_each_use(
        live: LiveClient, published: tuple[Backend, Published, str]) -> None:
    backend, keys, _ = published
    keys.cache_control = "no-cache"
    for _ in range(3):
        assert _token(live, backend).status_code == 200
    assert keys.fetches == 3


def test_max_age_keys_are_reused_then_fetched_again_for_an_unknown_kid(
        live: LiveClient, published: tuple[Backend, Published, str]) -> None:
    backend, keys, _ = published
    keys.cache_control = "public, max-age=600"
    assert _token(live, backend).status_code == 200
    assert _token(live, backend).status_code == 200
    assert keys.fetches == 1
    # The client rotates: an assertion signed with its new key makes one fetch, then works.
    rotated = ECKey.generate_key("P-384", private=True, auto_kid=True)
    keys.keys.append(rotated)
    assert _token(live, backend, key=rotated).status_code == 200
    assert keys.fetches == 2
    # Made-up kids right after: no fetch each time (the signature check refuses them).
    stranger = ECKey.generate_key("P-384", private=True, auto_kid=True)
    for _ in range(3):
        assert _refused(_token(live, backend, key=stranger))
    assert keys.fetches == 2


@pytest.mark.parametrize(("header", "lifetime"), [
    (None, remote_keys.DEFAULT_SECONDS),
    ("max-age=60", 60),
    ("public, max-age=99999999", remote_keys.MAX_SECONDS),
    ("no-store", 0),
    ("max-age=600, no-cache", 0),
    ('max-age="30"', 30),
])
def test_cache_lifetime_follows_cache_control(header: str | None, lifetime: float) -> None:
    assert remote_keys.cache_lifetime(header) == lifetime


def test_header_parameters_not_understood_are_ignored_unless_critical(
        live: LiveClient, published: tuple[Backend, Published, str]) -> None:
    """The SMART bulk-data reference client puts `kty` in the JWS header."""
    backend, _, _ = published
    assert _token(live, backend, header={"kty": "EC"}).status_code == 200
    critical = _token(live, backend, header={"crit": ["urn:example:x"], "urn:example:x": 1})
    assert _refused(critical)


@pytest.mark.parametrize("url", ["file:///etc/hosts", "http://keys.example.org/jwks",
                                 "ftp://127.0.0.1/jwks"])
def test_keys_are_fetched_over_https_only(url: str) -> None:
    """A JWKS URL registered by an older version, or a trusted provider's, is checked too."""
    with pytest.raises(ValueError, match="https"):
        remote_keys.RemoteKeySets().get(url)


def test_a_jwks_url_that_redirects_is_refused(
        live: LiveClient, published: tuple[Backend, Published, str]) -> None:
    """No redirect is followed: the registered URL is the one trusted."""
    backend, keys, url = published

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(302)
            self.send_header("Location", url)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        moved = f"http://127.0.0.1:{httpd.server_address[1]}/jwks"
        registry(live).add_backend_client(backend.client_id, "system/Patient.rs", jwks_uri=moved)
        assert _refused(_token(live, backend))
        assert keys.fetches == 0
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_failed_look_for_a_new_key_leaves_the_fresh_set_in_use(
        live: LiveClient, published: tuple[Backend, Published, str]) -> None:
    """Anyone may send an assertion with a made-up `kid` naming a client: if the publisher
    fails then, the client's cached keys must keep working."""
    backend, keys, _ = published
    keys.cache_control = "public, max-age=600"
    assert _token(live, backend).status_code == 200
    keys.failing = True
    stranger = ECKey.generate_key("P-384", private=True, auto_kid=True)
    assert _refused(_token(live, backend, key=stranger))
    assert keys.fetches == 2
    assert _token(live, backend).status_code == 200
