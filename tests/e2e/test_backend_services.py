"""SMART Backend Services over real HTTP: an investigator site system registered with the CLI
gets a token with a signed assertion and fetches Communications; nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import orjson

from tests.auth.conftest import es384
from tests.e2e.conftest import Server


def test_site_system_authenticates_and_reads_only_its_scope(tmp_path: Path) -> None:
    server = Server(tmp_path, workers=2)
    try:
        site = es384("site-bordeaux")
        jwks = tmp_path / "site.jwks.json"
        jwks.write_bytes(orjson.dumps(site.jwks()))
        subprocess.run([sys.executable, "-m", "fhir_server.cli", "client", "add-backend",
                        site.client_id, "--scope", "system/Communication.rs", "--jwks", str(jwks)],
                       env={"FHIR_SERVER_DATA_DIR": str(tmp_path), "PATH": "",
                            "FHIR_SERVER_KEY_RING": os.environ["FHIR_SERVER_KEY_RING"]}, check=True,
                       capture_output=True)
        discovery = httpx.get(f"{server.base}/fhir/.well-known/smart-configuration").json()
        token_url = discovery["token_endpoint"]
        assert token_url == f"{server.base}/auth/token"
        issued = httpx.post(token_url, data=site.form("system/Communication.rs system/Patient.rs",
                                                      audience=token_url))
        assert issued.status_code == 200, issued.text
        body = issued.json()
        assert body["scope"] == "system/Communication.rs"
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        for _ in range(4):  # both workers verify tokens signed by either
            assert httpx.get(f"{server.base}/fhir/Communication", headers=headers).status_code == 200
        assert httpx.get(f"{server.base}/fhir/Patient", headers=headers).status_code == 403
        assert httpx.get(f"{server.base}/fhir/Communication").status_code == 401
    finally:
        server.stop()
