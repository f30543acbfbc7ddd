"""The SMART JavaScript client library (npm `fhirclient`, installed by bin/test into
tests/browser/js) completes a standalone launch in Chromium against a real server: discovery,
PKCE, the sign-in pages, the token request and an API call, all cross-origin (CORS allowed
from the app's registered redirect URI). As a public app, as a confidential app sending its
secret with HTTP Basic, and as an asymmetric app signing a client assertion (ES384, with a
`jku` naming its registered JWKS URL)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pyotp
import pytest
from joserfc.jwk import ECKey
from playwright.sync_api import Browser

from fhir_server.auth.registry import Registry as AuthRegistry
from fhir_server.auth.users import Users
from tests.browser.test_login_pages import PASSWORD
from tests.builders import patient
from tests.e2e.conftest import Server, _free_port

LIBRARY = Path(__file__).parent / "js" / "node_modules" / "fhirclient" / "build" / "fhir-client.js"
SCOPE = "openid fhirUser launch/patient patient/*.rs"

LAUNCH = """<!doctype html><html lang="en"><head><title>launch</title>
<script src="fhir-client.js"></script></head><body><p>launching</p><script>
FHIR.oauth2.authorize({options});
</script></body></html>"""

INDEX = """<!doctype html><html lang="en"><head><title>app</title>
<script src="fhir-client.js"></script></head><body><p id="out">waiting</p><script>
FHIR.oauth2.ready()
  .then(client => client.request("Patient/" + client.patient.id))
  .then(record => { document.getElementById("out").textContent = "family: " + record.name[0].family; })
  .catch(error => { document.getElementById("out").textContent = "error: " + error; });
</script></body></html>"""


@pytest.fixture
def app_site(tmp_path: Path) -> Iterator[str]:
    """The app's static pages, on their own origin."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "fhir-client.js").write_bytes(LIBRARY.read_bytes())
    port = _free_port()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()
    httpd.server_close()


def _register(registry: AuthRegistry, kind: str, app_site: str, site: Path) -> dict[str, Any]:
    """The app, registered as `kind`; the options its launch page gives fhirclient."""
    options: dict[str, Any] = {"clientId": "js-app", "scope": SCOPE, "redirectUri": "index.html",
                               "pkceMode": "required"}
    redirect = [f"{app_site}/index.html"]
    if kind == "public":
        registry.add_app("js-app", SCOPE, redirect)
    elif kind == "basic":
        secret = "s3cret-" + "x" * 30
        registry.add_app("js-app", SCOPE, redirect, secret=secret)
        options["clientSecret"] = secret  # fhirclient sends it with HTTP Basic
    else:
        key = ECKey.generate_key("P-384", private=True, auto_kid=True)
        (site / "jwks.json").write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
        registry.add_app("js-app", SCOPE, redirect, jwks_uri=f"{app_site}/jwks.json")
        options["clientPrivateJwk"] = {**key.as_dict(private=True), "alg": "ES384"}
        options["clientPublicKeySetUrl"] = f"{app_site}/jwks.json"  # sent as the jku
    return options


@pytest.mark.parametrize("kind", ["public", "basic", "asymmetric"])
def test_fhirclient_standalone_launch(browser: Browser, app_site: str, tmp_path: Path,
                                      kind: str) -> None:
    data = tmp_path / "server"
    data.mkdir()
    server = Server(data, workers=1)
    try:
        registry = AuthRegistry(data / "auth.db")
        site = Path(str(tmp_path / "site"))
        options = _register(registry, kind, app_site, site)
        users = Users(registry)
        users.add("helene", PASSWORD, "Patient/helene")
        totp = pyotp.TOTP(users.totp_secret("helene"))
        with server.client() as http:
            assert http.put("/Patient/helene", json={**patient(family="Dupont"), "id": "helene"},
                            headers={"Content-Type": "application/fhir+json"}).status_code == 201
        options["iss"] = f"{server.base}/fhir"
        (site / "launch.html").write_text(LAUNCH.format(options=orjson.dumps(options).decode()))
        (site / "index.html").write_text(INDEX)

        page = browser.new_page(locale="en-GB")
        page.goto(f"{app_site}/launch.html")
        page.get_by_label("Username").fill("helene")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("6-digit code").fill(totp.now())
        page.get_by_role("button", name="Verify").click()
        page.get_by_role("button", name="Allow").click()
        page.wait_for_url(f"{app_site}/index.html**")
        out = page.locator("#out")
        out.filter(has_text=":").wait_for(timeout=30_000)
        assert out.inner_text() == "family: Dupont"
    finally:
        server.stop()
