"""The PKCS#11 key provider, against SoftHSM (Debian's softhsm2, installed by bin/test): the
KeyProvider contract, the server running on it (`key_provider = pkcs11`), `keys init|rotate`
through the CLI, and no key byte or PIN in any error."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pkcs11 import Attribute

from fhir_server import cli
from fhir_server.app import create_app
from fhir_server.crypto import DataKeys, KeyRingError, open_provider
from fhir_server.crypto.hsm import Pkcs11KeyRing
from fhir_server.settings import Settings
from tests.builders import patient
from tests.conftest import authorized
from tests.http.helpers import send

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN = "4921-secret-pin"
TOKENS = ("contract", "server", "cli", "errors")


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A SoftHSM token directory holding one fresh token per test; the PIN file (0600).
    SoftHSM reads its configuration once per process, so the tokens are all made first."""
    assert MODULE.exists(), "SoftHSM is missing: bin/test installs Debian's softhsm2"
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    before = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    for label in TOKENS:
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN,
                        "--so-pin", "so-" + PIN], check=True, capture_output=True)
    pin = folder / "pin"
    pin.write_text(PIN + "\n")
    pin.chmod(0o600)
    yield pin
    if before is None:
        del os.environ["SOFTHSM2_CONF"]
    else:
        os.environ["SOFTHSM2_CONF"] = before


def hsm_settings(pin: Path, token: str, data: Path) -> Settings:
    # key_ring in `data`: the erasure ledger is kept beside it, not beside the session's ring
    return Settings(data_dir=data, key_provider="pkcs11", pkcs11_module=MODULE, pkcs11_token=token,
                    pkcs11_pin_file=pin, base_url="http://testserver/fhir", key_ring=data / "keyring.json")


def test_the_provider_contract(softhsm: Path) -> None:
    ring = Pkcs11KeyRing(MODULE, "contract", softhsm, create=True)
    key, context = os.urandom(32), b"data-key-id"
    wrapped = ring.wrap(key, context)
    assert ring.unwrap(wrapped, context) == key and key not in wrapped
    with pytest.raises(KeyRingError, match="does not authenticate"):
        ring.unwrap(wrapped, b"another key's id")  # bound to its context
    with pytest.raises(KeyRingError, match="does not authenticate"):
        ring.unwrap(wrapped[:-1] + bytes((wrapped[-1] ^ 1,)), context)
    first = ring.status().active
    assert ring.kek_of(wrapped) == first
    # The KEK never leaves the token: sensitive, not extractable.
    kek = ring._keks[first]
    assert kek[Attribute.SENSITIVE] and not kek[Attribute.EXTRACTABLE]
    # Rotation: a new active KEK; the old one is retired and still unwraps until destroyed.
    second = ring.rotate()
    status = ring.status()
    assert status.active == second != first and set(status.keks) == {first, second}
    assert first in status.retired and second not in status.retired
    assert ring.kek_of(ring.wrap(key, context)) == second
    assert ring.unwrap(wrapped, context) == key
    again = Pkcs11KeyRing(MODULE, "contract", softhsm)  # another process sees the same
    assert again.status().active == second and again.unwrap(wrapped, context) == key
    with pytest.raises(KeyRingError, match="active"):
        ring.destroy(second)
    ring.destroy(first)
    with pytest.raises(KeyRingError, match=f"{first} is not in"):
        again.unwrap(wrapped, context)
    # Blind-index keys: computed in the token, stable, one per parameter.
    assert ring.index_key("Patient.name") == again.index_key("Patient.name")
    assert len(ring.index_key("Patient.name")) == 32
    assert ring.index_key("Patient.name") != ring.index_key("Patient.family")
    with pytest.raises(KeyRingError, match="already holds"):
        Pkcs11KeyRing(MODULE, "contract", softhsm, create=True)


def test_the_server_runs_on_the_hsm(softhsm: Path, tmp_path: Path) -> None:
    """Bodies sealed under data keys the token wraps; names searched on index keys the token
    derives; a KEK rotation re-wraps every data key and everything still reads."""
    settings = hsm_settings(softhsm, "server", tmp_path)
    open_provider(settings, create=True)
    with authorized(TestClient(create_app(settings))) as client:
        for n in range(3):
            body = {**patient(), "id": f"h{n}", "name": [{"family": f"Hsmfamily{n}"}]}
            assert send(client, "PUT", f"/fhir/Patient/h{n}", body).status_code == 201
        keys = DataKeys(open_provider(settings), settings.data_keys_path)
        before = keys.provider.status().active
        keys.provider.rotate()
        while keys.rewrap():
            pass
        assert keys.status().by_kek == {keys.provider.status().active: keys.status().keys} != {before: 0}
        assert send(client, "GET", "/fhir/Patient/h1").json()["name"][0]["family"] == "Hsmfamily1"
        found = send(client, "GET", "/fhir/Patient?family=hsmfamily2").json()
        assert [e["resource"]["id"] for e in found["entry"]] == ["h2"]
    stored = (tmp_path / "fhir.db").read_bytes() + (tmp_path / "datakeys.db").read_bytes()
    assert b"Hsmfamily" not in stored and b"hsmfamily" not in stored
    assert not (tmp_path / "keyring.json").exists()  # nothing of the keys on disk


def test_keys_commands_use_the_chosen_provider(softhsm: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in (("DATA_DIR", tmp_path), ("KEY_PROVIDER", "pkcs11"), ("PKCS11_MODULE", MODULE),
                        ("PKCS11_TOKEN", "cli"), ("PKCS11_PIN_FILE", softhsm),
                        ("KEY_RING", tmp_path / "keyring.json")):
        monkeypatch.setenv(f"FHIR_SERVER_{name}", str(value))
    monkeypatch.setattr(cli, "configure", lambda level: None)
    assert cli.main(["keys", "init"]) == 0
    assert "PKCS#11 token 'cli'" in capsys.readouterr().out
    assert cli.main(["keys", "init"]) == 2  # the token holds keys already: left unchanged
    assert cli.main(["keys", "status"]) == 0
    assert "PKCS#11 token 'cli'" in capsys.readouterr().out
    assert cli.main(["keys", "rotate", "--kek"]) == 0
    assert cli.main(["keys", "verify"]) == 0
    # The key backup: the data keys, checked to open under the token; the KEKs stay in it.
    assert cli.main(["keys", "backup", str(tmp_path / "key-backup")]) == 0
    assert sorted(p.name for p in (tmp_path / "key-backup").iterdir()) == ["datakeys.db"]
    assert not (tmp_path / "keyring.json").exists()


def test_errors_name_the_token_never_the_pin(softhsm: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("0000")
    wrong.chmod(0o600)
    with pytest.raises(KeyRingError) as caught:
        Pkcs11KeyRing(MODULE, "errors", wrong)
    assert "errors" in str(caught.value) and "0000" not in str(caught.value)
    with pytest.raises(KeyRingError, match="no fhir-server key ring"):
        Pkcs11KeyRing(MODULE, "errors", softhsm)  # an empty token: `keys init` first
    open_pin = tmp_path / "open-pin"
    open_pin.write_text(PIN)
    open_pin.chmod(0o644)
    with pytest.raises(KeyRingError, match="chmod 600") as caught:
        Pkcs11KeyRing(MODULE, "errors", open_pin)
    assert PIN not in str(caught.value)
    with pytest.raises(KeyRingError, match="PKCS11_TOKEN"):
        open_provider(Settings(data_dir=tmp_path, key_provider="pkcs11", pkcs11_module=MODULE))
