"""fhir_server.crypto.seal: JWE (RFC 7516) sealing with ECDH-ES+A256KW / A256GCM (RFC 7518
§4.6, §5.3), in the compact (§7.1) and JSON (§7.2) serializations."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from joserfc.jwk import ECKey, RSAKey

from fhir_server.crypto import seal as sealing
from fhir_server.crypto.seal import SealError, open_sealed, recipient_kids, seal

SECRET = "HER2+ metastatic, sealed-marker-7Q"


def _pair(kid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    key = ECKey.generate_key("P-256", {"kid": kid, "use": "enc"})
    return key.as_dict(private=True), key.as_dict(private=False)


@pytest.fixture
def keys() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    return {name: _pair(name) for name in ("sender", "site", "other")}


def test_json_serialization_opens_for_every_recipient(keys: dict[str, Any]) -> None:
    sealed = seal(SECRET, {"keys": [keys["sender"][1], keys["site"][1]]})
    assert SECRET.encode() not in sealed.encode()
    assert recipient_kids(sealed) == ["sender", "site"]
    assert open_sealed(sealed, keys["sender"][0]) == SECRET.encode()
    assert sealing.open(sealed, keys["site"][0]) == SECRET.encode()


def test_compact_serialization(keys: dict[str, Any]) -> None:
    sealed = seal(SECRET.encode(), [keys["site"][1]], compact=True)
    assert sealed.count(".") == 4
    assert recipient_kids(sealed) == ["site"]
    assert open_sealed(sealed, keys["site"][0]) == SECRET.encode()


def test_flattened_json_serialization_is_read(keys: dict[str, Any]) -> None:
    general = orjson.loads(seal(SECRET, [keys["site"][1]]))
    flattened = {k: v for k, v in general.items() if k != "recipients"} | general["recipients"][0]
    text = orjson.dumps(flattened).decode()
    assert recipient_kids(text) == ["site"]
    assert open_sealed(text, keys["site"][0]) == SECRET.encode()


@pytest.mark.parametrize("compact", [False, True])
def test_a_key_not_sealed_to_does_not_open(keys: dict[str, Any], compact: bool) -> None:
    sealed = seal(SECRET, [keys["site"][1]], compact=compact)
    with pytest.raises(SealError):
        open_sealed(sealed, keys["other"][0])
    # the same kid on another key: the key agreement fails, not just the kid look-up
    impostor = ECKey.generate_key("P-256", {"kid": "site"}).as_dict(private=True)
    with pytest.raises(SealError):
        open_sealed(sealed, impostor)


def _flip(part: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    raw[0] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize("field", ["ciphertext", "tag", "iv", "encrypted_key", "protected"])
def test_tampering_fails_to_open_json(keys: dict[str, Any], field: str) -> None:
    general = orjson.loads(seal(SECRET, [keys["site"][1]]))
    if field == "encrypted_key":
        general["recipients"][0][field] = _flip(general["recipients"][0][field])
    elif field == "protected":
        general[field] = base64.urlsafe_b64encode(b'{"enc":"A256GCM","x":1}').rstrip(b"=").decode()
    else:
        general[field] = _flip(general[field])
    with pytest.raises(SealError):
        open_sealed(orjson.dumps(general), keys["site"][0])


@pytest.mark.parametrize("index", [2, 3, 4])
def test_tampering_fails_to_open_compact(keys: dict[str, Any], index: int) -> None:
    parts = seal(SECRET, [keys["site"][1]], compact=True).split(".")
    parts[index] = _flip(parts[index])
    with pytest.raises(SealError):
        open_sealed(".".join(parts), keys["site"][0])


def test_kid_defaults_to_the_thumbprint() -> None:
    key = ECKey.generate_key("P-256")
    public = key.as_dict(private=False)
    public.pop("kid", None)
    sealed = seal(SECRET, [public])
    assert recipient_kids(sealed) == [key.thumbprint()]
    assert open_sealed(sealed, {k: v for k, v in key.as_dict(private=True).items() if k != "kid"}) == SECRET.encode()


@pytest.mark.parametrize("jwk", [
    RSAKey.generate_key(2048).as_dict(private=False),
    ECKey.generate_key("P-384").as_dict(private=False),
    ECKey.generate_key("P-256", {"use": "sig"}).as_dict(private=False),
    ECKey.generate_key("P-256", {"alg": "ES256"}).as_dict(private=False),
])
def test_only_p256_encryption_keys_seal(jwk: dict[str, Any]) -> None:
    assert not sealing.is_sealing_key(jwk)
    with pytest.raises(SealError):
        seal(SECRET, [jwk])


@pytest.mark.parametrize("text", [
    "", "not a jwe", "a.b.c.d.e", "{}", "[]", '{"ciphertext": "x", "recipients": []}',
    '{"ciphertext": "x", "recipients": "no"}', "....", "{not json",
    "e30.e30.!!.e30.e30", "e30.e30.e30..e30", "e30.e30.e30.e30", '{"recipients": [{}]}',
])
def test_malformed_jwe_is_refused(text: str) -> None:
    with pytest.raises(SealError):
        recipient_kids(text)


def test_other_algorithms_are_refused(keys: dict[str, Any]) -> None:
    general = orjson.loads(seal(SECRET, [keys["site"][1]]))
    general["recipients"][0]["header"]["alg"] = "ECDH-ES"
    with pytest.raises(SealError):
        recipient_kids(orjson.dumps(general))
    protected = base64.urlsafe_b64encode(b'{"enc":"A128GCM"}').rstrip(b"=").decode()
    with pytest.raises(SealError):
        recipient_kids(orjson.dumps({**orjson.loads(seal(SECRET, [keys["site"][1]])), "protected": protected}))


def test_a_recipient_without_kid_is_refused(keys: dict[str, Any]) -> None:
    general = orjson.loads(seal(SECRET, [keys["site"][1]]))
    del general["recipients"][0]["header"]["kid"]
    with pytest.raises(SealError):
        recipient_kids(orjson.dumps(general))


def test_too_many_recipients_are_refused(keys: dict[str, Any]) -> None:
    general = orjson.loads(seal(SECRET, [keys["site"][1]]))
    general["recipients"] *= sealing.MAX_RECIPIENTS + 1
    with pytest.raises(SealError):
        recipient_kids(orjson.dumps(general))


@pytest.mark.parametrize("member", ["iv", "ciphertext", "tag", "encrypted_key"])
def test_a_json_jwe_missing_a_part_is_refused(keys: dict[str, Any], member: str) -> None:
    general = orjson.loads(seal(SECRET, [keys["site"][1]]))
    holder = general["recipients"][0] if member == "encrypted_key" else general
    holder[member] = "not base64url!"
    with pytest.raises(SealError):
        recipient_kids(orjson.dumps(general))
    del holder[member]
    with pytest.raises(SealError):
        recipient_kids(orjson.dumps(general))
