"""A SMART access token for the perf harness's `PERF_AUTH` (docs/performance.md, "How to run").

Registers a backend client (`system/*.cruds`, an ES384 key made here and kept in memory) in
the running server's data directory, as `fhir-server client add-backend` does, then asks the
server's token endpoint for a token the way a SMART Backend Services client does
(client_credentials with a signed `private_key_jwt` assertion), and prints the
`Authorization` value. The token lives `FHIR_SERVER_TOKEN_LIFETIME` seconds (the server's
setting: raise it for a long run).

    FHIR_SERVER_DATA_DIR=/tmp/perf-data .venv/bin/python -m bench.smart_token \\
        --token-url http://127.0.0.1:18500/auth/token
"""

from __future__ import annotations

import argparse
import secrets
import time

import httpx2 as httpx
from joserfc import jwt
from joserfc.jwk import ECKey

from fhir_server.auth.registry import Registry
from fhir_server.settings import Settings

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def token(token_url: str, client_id: str, scope: str) -> str:
    """A token for a backend client registered now under `client_id`."""
    key = ECKey.generate_key("P-384", private=True, auto_kid=True)
    registry = Registry(Settings().data_dir / "auth.db")
    registry.add_backend_client(client_id, scope, jwks={"keys": [key.as_dict(private=False)]})
    now = int(time.time())
    assertion = jwt.encode({"alg": "ES384", "kid": key.kid, "typ": "JWT"},
                           {"iss": client_id, "sub": client_id, "aud": token_url, "iat": now,
                            "exp": now + 240, "jti": secrets.token_hex(8)}, key, algorithms=["ES384"])
    response = httpx.post(token_url, data={"grant_type": "client_credentials", "scope": scope,
                                           "client_assertion_type": ASSERTION_TYPE,
                                           "client_assertion": assertion}, timeout=30)
    response.raise_for_status()
    return str(response.json()["access_token"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token-url", required=True, help="the server's token endpoint")
    parser.add_argument("--client-id", default="perf")
    parser.add_argument("--scope", default="system/*.cruds")
    args = parser.parse_args()
    print(f"Bearer {token(args.token_url, args.client_id, args.scope)}")
