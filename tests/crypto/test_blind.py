"""Blind-index digests (crypto/blind.py): keyed, per parameter, per domain, fixed length."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fhir_server.crypto.blind import LINK_LENGTH, TOKEN_LENGTH, BlindDigest


def keys(param: str) -> bytes:
    return param.encode().ljust(32, b"\x01")


def test_a_digest_is_a_fixed_length_token_that_does_not_show_its_text() -> None:
    digest = BlindDigest(keys)
    tokens = {digest("Patient.family", "p", text) for text in ("d", "dupont", "dupont" * 40)}
    assert len(tokens) == 3
    assert {len(t) for t in tokens} == {TOKEN_LENGTH}
    assert not any("dupont" in t for t in tokens)


def test_equal_texts_give_equal_tokens_and_nothing_else_does() -> None:
    digest = BlindDigest(keys)
    assert digest("Patient.family", "p", "dupont") == BlindDigest(keys)("Patient.family", "p", "dupont")
    assert digest("Patient.family", "p", "dupont") != digest("Patient.family", "p", "dupond")
    # Another parameter (its own key) or another domain never gives the same token.
    assert digest("Patient.family", "p", "dupont") != digest("Patient.given", "p", "dupont")
    assert digest("Patient.family", "p", "dupont") != digest("Patient.family", "x", "dupont")
    # The domain is separated from the text: ("p", "x\0a") is not ("p\0x", "a").
    assert digest("Patient.family", "p", "x\x00a") != digest("Patient.family", "p\x00x", "a")


def test_the_key_decides_the_token() -> None:
    other = BlindDigest(lambda param: b"\x02" * 32)
    assert BlindDigest(keys)("Patient.name", "p", "jean") != other("Patient.name", "p", "jean")


def test_each_key_is_fetched_once_per_parameter() -> None:
    asked: list[str] = []
    digest = BlindDigest(lambda param: asked.append(param) or keys(param))
    for text in ("a", "b", "c"):
        digest("Patient.name", "p", text)
    digest("Patient.family", "p", "a")
    assert asked == ["Patient.name", "Patient.family"]


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than 32 bytes"):
        BlindDigest(lambda param: b"short")("Patient.name", "p", "jean")


def test_the_token_is_truncated_hmac_sha256_of_the_domain_and_text() -> None:
    """The pad-state computation is RFC 2104 HMAC-SHA-256, short and long keys alike."""
    for key in (b"\x07" * 32, b"\x09" * 100):
        token = BlindDigest(lambda param: key)("Patient.name", "p", "hélène")
        mac = hmac.new(key, "1:p\x00hélène".encode(), hashlib.sha256).digest()[:16]
        assert token == base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_a_chain_is_the_first_six_bytes_of_each_prefix_token_not_ending_in_a_space() -> None:
    digest = BlindDigest(keys)
    text = "jo ann é"
    links = [digest("Patient.given", "p", text[:n])[:LINK_LENGTH] for n in range(1, len(text) + 1)
             if text[n - 1] != " "]
    assert digest.chain("Patient.given", "p", text) == "".join(links)
    assert len(digest.chain("Patient.given", "p", text)) == LINK_LENGTH * 6
    assert digest.chain("Patient.given", "p", "") == ""


TEXT = st.text(alphabet="ab é", max_size=8).map(lambda t: " ".join(t.split()))  # normalized


@settings(max_examples=300, deadline=None)
@given(TEXT, TEXT)
def test_a_chain_starts_with_anothers_exactly_when_its_text_starts_with_the_others(stored: str,
                                                                                     searched: str) -> None:
    """The stores' start-with match on chains answers start-with on the texts: a search
    value (normalized, so never ending in a space) and a stored value, from an alphabet small
    enough that most pairs share a prefix."""
    digest = BlindDigest(keys)
    assume(searched)
    assert (digest.chain("Patient.name", "p", stored).startswith(digest.chain("Patient.name", "p", searched))
            == stored.startswith(searched))
