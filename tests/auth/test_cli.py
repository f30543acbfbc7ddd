"""The administration commands: users (by FHIR reference or RPPS number), apps, backend
clients, key rotation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from fhir_server import cli
from fhir_server.app import open_context
from fhir_server.auth.keys import SigningKeys
from fhir_server.auth.registry import Registry
from fhir_server.auth.users import Users
from fhir_server.services.demo import load_demo_data
from fhir_server.settings import Settings
from tests.auth.conftest import es384
from tests.auth.test_rpps import RPPS_EXTRACT

PASSWORD = "correct horse battery staple"


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path))
    return tmp_path


def test_user_by_rpps_number_is_the_stored_practitioner(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def demo() -> None:
        async with open_context(Settings(data_dir=data)) as context:
            await load_demo_data(context)

    asyncio.run(demo())
    assert cli.main(["rpps", "load", str(RPPS_EXTRACT)]) == 0
    assert cli.main(["user", "add", "claire", "--rpps", "10001234567", "--password", PASSWORD]) == 0
    user = Users(Registry(data / "auth.db")).get("claire")
    assert user is not None and user.fhir_user == "Practitioner/dr-martin"
    # in the register, but no stored Practitioner
    assert cli.main(["user", "add", "nobody", "--rpps", "10008888777", "--password", PASSWORD]) == 2
    assert "no Practitioner with RPPS number 10008888777" in capsys.readouterr().err
    assert cli.main(["user", "add", "weak", "--fhir-user", "Patient/p", "--password", "short"]) == 2


def test_apps_backend_clients_and_keys(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["client", "add-app", "portal", "--scope", "openid patient/*.rs",
                     "--redirect-uri", "https://portal.example.org/cb", "--confidential"]) == 0
    secret = capsys.readouterr().out.split("shown once, store it in the app's configuration): ")[1].strip()
    app = Registry(data / "auth.db").client("portal")
    assert app is not None and app.kind == "confidential" and app.secret_hash
    assert secret not in app.secret_hash  # only its hash is stored
    keys = data / "site.jwks"
    keys.write_bytes(orjson.dumps(es384("site").jwks()))
    assert cli.main(["client", "add-backend", "site", "--scope", "system/Communication.rs",
                     "--jwks", str(keys)]) == 0
    assert Registry(data / "auth.db").client("site").kind == "backend"  # type: ignore[union-attr]
    assert cli.main(["client", "add-app", "signed", "--scope", "openid patient/*.rs",
                     "--redirect-uri", "https://signed.example.org/cb", "--jwks", str(keys)]) == 0
    signed = Registry(data / "auth.db").client("signed")
    assert signed is not None and signed.kind == "asymmetric" and signed.jwks is not None
    first = SigningKeys(data / "signing-keys.json", 300).signing_key().kid
    assert cli.main(["keys", "rotate"]) == 0
    assert len(SigningKeys(data / "signing-keys.json", 300).jwks()["keys"]) == 2
    assert first in {k["kid"] for k in SigningKeys(data / "signing-keys.json", 300).jwks()["keys"]}


def test_a_right_password_does_not_forgive_failures(tmp_path: Path) -> None:
    """Only the second factor resets failures: guessing codes in rounds meets a growing lock."""
    users = Users(Registry(tmp_path / "auth.db"))
    users.add("u", PASSWORD, "Patient/p")
    for _ in range(4):
        assert users.check_password("u", "wrong password!!") is None
    assert users.check_password("u", PASSWORD) is not None
    users.check_code("u", "000000")  # a wrong code is the fifth failure: locked
    from fhir_server.auth.users import Locked

    with pytest.raises(Locked):
        users.check_password("u", PASSWORD)


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://keys.example.org/jwks", "http://keys.example.org/jwks",
    "http://10.0.0.1/jwks", "data:application/json,{}", "https:///jwks"])
@pytest.mark.parametrize("command", [
    ["client", "add-backend", "site", "--scope", "system/Patient.rs"],
    ["client", "add-app", "app", "--scope", "patient/*.rs",
     "--redirect-uri", "https://app.example.org/cb"]])
def test_a_jwks_url_must_be_https(data: Path, capsys: pytest.CaptureFixture[str],
                                  command: list[str], url: str) -> None:
    """http only to a loopback host (tests, local development); nothing else is fetched."""
    assert cli.main([*command, "--jwks-uri", url]) == 2
    assert "https" in capsys.readouterr().err
    assert Registry(data / "auth.db").client(command[2]) is None


@pytest.mark.parametrize("url", [
    "https://keys.example.org/jwks", "http://127.0.0.1:8080/jwks", "http://localhost/jwks",
    "http://[::1]:8080/jwks"])
def test_https_and_loopback_jwks_urls_are_registered(data: Path, url: str) -> None:
    assert cli.main(["client", "add-backend", "site", "--scope", "system/Patient.rs",
                     "--jwks-uri", url]) == 0
    found = Registry(data / "auth.db").client("site")
    assert found is not None and found.jwks_uri == url
