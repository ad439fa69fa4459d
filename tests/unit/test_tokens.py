"""The token helper (paxkit/tokens.py) and issued API keys (gateway/clients.py)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from gateway.clients import api_key_name, issue_api_key
from gateway.identity import AUDIENCE, ISSUER, make_signer
from paxkit.errors import TokenExpired, TokenInvalid
from paxkit.tokens import TokenSigner, bearer_token

pytestmark = pytest.mark.unit

KEY = "unit-test-signing-key-" + "0123456789abcdef" * 3  # long enough for HS512 too


def signer(key: str = KEY, ttl_s: float = 900, offset_s: float = 0.0, **kw) -> TokenSigner:
    kw.setdefault("issuer", ISSUER)
    kw.setdefault("audience", AUDIENCE)
    return TokenSigner(key, ttl_s, clock=lambda: time.time() + offset_s, **kw)


def test_a_token_names_its_subject_until_it_expires():
    issued = signer().issue("7")
    subject, expires_at = signer().verify(issued.token)
    assert subject == issued.subject == "7"
    assert expires_at == issued.expires_at == pytest.approx(time.time() + 900, abs=2)
    assert issued.ttl_s == 900


def test_two_tokens_of_one_user_differ():
    assert signer().issue("7").token != signer().issue("7").token


def test_an_expired_token_is_token_expired_not_invalid():
    old = signer(ttl_s=60, offset_s=-3600).issue("7").token
    with pytest.raises(TokenExpired) as caught:
        signer().verify(old)
    assert (caught.value.status, caught.value.code) == (401, "token_expired")


def test_expiry_follows_the_signers_clock():
    token = signer(ttl_s=60).issue("7").token
    with pytest.raises(TokenExpired):
        signer(offset_s=120).verify(token)


def forged(header: dict, claims: dict, signature: str = "") -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}.{signature}"


def good_claims() -> dict:
    now = int(time.time())
    return {"sub": "7", "iat": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE}


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        forged({"alg": "none", "typ": "JWT"}, good_claims()),
        jwt.encode(good_claims(), "another-key-0123456789abcdef0123456789", algorithm="HS256"),
        jwt.encode(good_claims(), KEY, algorithm="HS512"),
        jwt.encode({**good_claims(), "aud": "elsewhere"}, KEY, algorithm="HS256"),
        jwt.encode({**good_claims(), "iss": "someone"}, KEY, algorithm="HS256"),
        jwt.encode({k: v for k, v in good_claims().items() if k != "exp"}, KEY, algorithm="HS256"),
        jwt.encode({k: v for k, v in good_claims().items() if k != "sub"}, KEY, algorithm="HS256"),
        jwt.encode({**good_claims(), "sub": ""}, KEY, algorithm="HS256"),
    ],
    ids=[
        "empty",
        "garbage",
        "three-parts",
        "alg-none",
        "other-key",
        "other-algorithm",
        "other-audience",
        "other-issuer",
        "no-expiry",
        "no-subject",
        "empty-subject",
    ],
)
def test_anything_but_a_well_signed_token_of_ours_is_token_invalid(token):
    with pytest.raises(TokenInvalid) as caught:
        signer().verify(token)
    assert (caught.value.status, caught.value.code) == (401, "token_invalid")
    if token:
        assert token not in caught.value.message, "a token is never echoed"


def test_a_tampered_payload_breaks_the_signature():
    header, _, signature = signer().issue("7").token.split(".")
    claims = base64.urlsafe_b64encode(json.dumps({**good_claims(), "sub": "8"}).encode())
    tampered = f"{header}.{claims.rstrip(b'=').decode()}.{signature}"
    with pytest.raises(TokenInvalid):
        signer().verify(tampered)


def test_a_signer_needs_a_key_and_a_positive_lifetime():
    with pytest.raises(ValueError):
        TokenSigner("", issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(ValueError):
        TokenSigner(KEY, 0, issuer=ISSUER, audience=AUDIENCE)
    assert make_signer(None, 900) is None


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
    ],
)
def test_the_bearer_header(header, token):
    assert bearer_token(header) == token


def test_an_issued_api_key_names_its_client_and_nothing_else_does():
    key = issue_api_key("partner-a", KEY)
    assert key.startswith("pk_partner-a.")
    assert api_key_name(key, KEY) == "partner-a"
    assert api_key_name(key, "another-signing-key") is None
    assert api_key_name(key[:-1] + ("0" if key[-1] != "0" else "1"), KEY) is None
    assert api_key_name("pk_partner-a.", KEY) is None
    assert api_key_name("partner-a", KEY) is None
    assert api_key_name(None, KEY) is None
    assert api_key_name(key, None) is None
    with pytest.raises(ValueError):
        issue_api_key("with.dot", KEY)
