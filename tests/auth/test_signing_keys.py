"""The signing key file read back (auth/keys.py): each key is imported once in a process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fhir_server.auth import keys
from fhir_server.auth.keys import SigningKeys


def test_a_reread_after_a_rotation_imports_only_the_new_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing a private key checks it (~30 ms of CPU, on the request path when a worker sees
    the file rotated by another process): a key already imported is not imported again."""
    imported: list[str] = []
    real = keys.RSAKey.import_key

    def counting(value: dict[str, Any], *args: Any, **kwargs: Any) -> keys.RSAKey:
        imported.append(value["kid"])
        return real(value, *args, **kwargs)

    monkeypatch.setattr(keys.RSAKey, "import_key", counting)
    monkeypatch.setattr(keys, "_RELOAD_SECONDS", 0.0)
    path = tmp_path / "signing-keys.json"
    first = SigningKeys(path, 300).signing_key()  # creates the file, then reads it
    reader = SigningKeys(path, 300)
    assert reader.signing_key().kid == first.kid
    second = SigningKeys(path, 300).rotate()  # another process (the CLI) rotates
    assert reader.signing_key().kid == second
    assert [k["kid"] for k in reader.jwks()["keys"]] == [first.kid, second]
    assert imported == [first.kid, second]
