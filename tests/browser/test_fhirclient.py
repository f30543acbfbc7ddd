"""The SMART JavaScript client library (npm `fhirclient`, installed by bin/test into
tests/browser/js) completes a standalone launch in Chromium against a real server: discovery,
PKCE, the sign-in pages, the token request and an API call, all cross-origin (CORS)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyotp
import pytest
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
FHIR.oauth2.authorize({{clientId: "js-app", scope: "{scope}", redirectUri: "index.html",
                        iss: "{iss}", pkceMode: "required"}});
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


def test_fhirclient_standalone_launch(browser: Browser, app_site: str, tmp_path: Path) -> None:
    data = tmp_path / "server"
    data.mkdir()
    server = Server(data, workers=1, env={"FHIR_SERVER_CORS_ORIGINS": f'["{app_site}"]'})
    try:
        registry = AuthRegistry(data / "auth.db")
        registry.add_app("js-app", SCOPE, [f"{app_site}/index.html"])
        users = Users(registry)
        users.add("helene", PASSWORD, "Patient/helene")
        totp = pyotp.TOTP(users.totp_secret("helene"))
        with server.client() as http:
            assert http.put("/Patient/helene", json={**patient(family="Dupont"), "id": "helene"},
                            headers={"Content-Type": "application/fhir+json"}).status_code == 201
        site = Path(str(tmp_path / "site"))
        (site / "launch.html").write_text(LAUNCH.format(scope=SCOPE, iss=f"{server.base}/fhir"))
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
