"""Settings: environment variables with the FHIR_SERVER_ prefix, and derived values."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from fhir_server import cli
from fhir_server.crypto import create_key_ring
from fhir_server.privacy.retention_schedule import child_environment
from fhir_server.settings import Settings


def test_base_url_follows_the_port_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_SERVER_PORT", "9123")
    assert Settings().base_url == "http://localhost:9123/fhir"
    monkeypatch.setenv("FHIR_SERVER_BASE_URL", "https://fhir.example.fr/api/fhir")
    settings = Settings()
    assert settings.base_url == "https://fhir.example.fr/api/fhir"
    assert settings.base_path == "/api/fhir"


def test_store_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).store_url == f"sqlite:///{tmp_path / 'fhir.db'}"
    assert Settings(store="sqlite:///elsewhere.db").store_url == "sqlite:///elsewhere.db"


@pytest.fixture
def serve_settings(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """What `fhir-server serve` would run with (the server itself is not started); the
    environment it changes is put back afterwards."""
    for name in Settings.model_fields:
        monkeypatch.setenv(f"FHIR_SERVER_{name.upper()}", "")
        monkeypatch.delenv(f"FHIR_SERVER_{name.upper()}")
    seen: list[Settings] = []
    monkeypatch.setattr(cli.workers, "run", lambda *args: seen.append(Settings()) or 0)
    return seen


def test_serve_flags_set_the_settings_the_server_runs_with(serve_settings: list[Settings],
                                                         tmp_path: Path) -> None:
    create_key_ring(tmp_path / "keyring.json")  # serve refuses to start without one
    assert cli.main(["serve", "--store", "mongodb://db.example:27017/fhir", "--data-dir",
                     str(tmp_path), "--base-url", "https://fhir.example.fr/fhir",
                     "--audit-store", f"sqlite:///{tmp_path / 'a.db'}", "--port", "9001",
                     "--no-validate-with-models", "--cors-origins", '["https://portal.example"]',
                     "--demo", "--no-auth"]) == 0
    [settings] = serve_settings
    assert settings.store_url == "mongodb://db.example:27017/fhir"
    assert settings.data_dir == tmp_path and settings.port == 9001
    assert settings.base_url == "https://fhir.example.fr/fhir"
    assert settings.audit_store_url == f"sqlite:///{tmp_path / 'a.db'}"
    assert not settings.validate_with_models and settings.demo_data and settings.auth == "off"
    assert settings.cors_origins == ["https://portal.example"]


def test_every_setting_has_a_serve_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    options = set(re.split(r"[\s\[\],|]+", capsys.readouterr().out))
    for name in Settings.model_fields:
        assert cli._OWN_FLAGS.get(name, f"--{name.replace('_', '-')}") in options, name


def test_a_bad_flag_value_is_refused_clearly(serve_settings: list[Settings],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--port", "eighty"]) == 2
    assert "--port / FHIR_SERVER_PORT: Input should be a valid integer" in capsys.readouterr().err
    assert not serve_settings


def test_the_readme_documents_every_setting_and_its_flag() -> None:
    rows = {line.split("|")[1].strip(" `"): line for line in
            (Path(__file__).parents[1] / "README.md").read_text().splitlines()
            if line.startswith("| `FHIR_SERVER_")}
    for name in Settings.model_fields:
        row = rows.get(f"FHIR_SERVER_{name.upper()}")
        assert row is not None, f"README.md: no row for FHIR_SERVER_{name.upper()}"
        assert f"`{cli._OWN_FLAGS.get(name, '--' + name.replace('_', '-'))}" in row, row


def test_the_key_provider_is_a_setting_and_a_serve_flag(serve_settings: list[Settings], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`--key-provider pkcs11` selects the HSM provider: without its module, token and PIN
    file the server refuses to start, saying which settings are missing."""
    assert Settings().key_provider == "local"
    assert cli.main(["serve", "--data-dir", str(tmp_path), "--key-provider", "pkcs11",
                     "--pkcs11-token", "fhir"]) == 2
    assert "FHIR_SERVER_PKCS11_MODULE" in capsys.readouterr().err and not serve_settings
    assert cli.main(["serve", "--key-provider", "vault"]) == 2
    assert "--key-provider" in capsys.readouterr().err and not serve_settings


@pytest.mark.parametrize("url", ["javascript:alert(document.cookie)", "data:text/html,hi",
                                 "http://example.org/cgu", "https://", "ftp://example.org/cgu",
                                 "//example.org/cgu"])
def test_the_terms_url_is_an_https_link(url: str) -> None:
    """The sign-in page links to it: only a web page over TLS (over http on this machine)."""
    with pytest.raises(ValidationError, match="terms URL"):
        Settings(terms_version="1", terms_url=url)


@pytest.mark.parametrize("url", ["https://example.org/cgu", "http://localhost:8080/cgu",
                                 "http://127.0.0.1/cgu"])
def test_a_published_terms_url_is_kept(url: str) -> None:
    assert Settings(terms_version="1", terms_url=url).terms_url == url


def test_settings_made_again_from_their_environment_are_equal(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    """What a child process is given (privacy/retention_schedule.py): every kind of setting,
    lists of objects and secrets included, comes back equal; None is no variable, whatever
    the parent's environment held."""
    for name in [n for n in os.environ if n.upper().startswith("FHIR_SERVER_")]:
        monkeypatch.delenv(name)
    settings = Settings(data_dir=tmp_path, port=9124, encryption=False, smtp_password=SecretStr("s3cret"),
                        trusted_issuers=[{"issuer": "https://idp.example", "jwks_uri": "https://idp.example/jwks",
                                          "psc": True}],
                        write_profiles=[{"type": "Patient", "profiles": ["http://example.org/p"]}],
                        protected_params=["Patient.name"])
    assert settings.environment()["FHIR_SERVER_SMTP_PASSWORD"] == "s3cret"
    assert settings.key_ring is None and "FHIR_SERVER_KEY_RING" not in settings.environment()
    monkeypatch.setenv("FHIR_SERVER_KEY_RING", "/not/this/one")
    monkeypatch.setenv("fhir_server_port", "1")
    child = child_environment(settings)
    assert "fhir_server_port" not in child
    for name in [n for n in os.environ if n.upper().startswith("FHIR_SERVER_")]:
        monkeypatch.delenv(name)
    for name, value in child.items():
        monkeypatch.setenv(name, value)
    again = Settings()
    assert again == settings
    assert again.key_ring is None and again.smtp_password.get_secret_value() == "s3cret"
