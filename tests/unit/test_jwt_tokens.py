"""JWT verification: keys from a JWKS file, claims mapped to an identity, every refusal typed."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm
from jwt.utils import base64url_encode

from shared.auth.identity import Role
from shared.auth.tokens import JwtVerifier, looks_like_jwt
from shared.errors import Unauthenticated
from tests.support.jwks import (
    AUDIENCE,
    ISSUER,
    claims,
    new_ec,
    new_rsa,
    public_jwk,
    sign,
    write_jwks,
)


def _bump_mtime(path: Path) -> None:
    # The rewrite may land within the file system's timestamp granularity; make the change
    # visible to the (mtime_ns, size) check whatever the size turns out to be.
    stat = path.stat()
    later = stat.st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(later, later))


def _b64(document: dict[str, Any]) -> str:
    return base64url_encode(json.dumps(document).encode()).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return new_rsa()


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return new_ec()


@pytest.fixture
def jwks_path(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> Path:
    path = tmp_path / "jwks.json"
    write_jwks(path, public_jwk(rsa_key, "rsa-1"), public_jwk(ec_key, "ec-1"))
    return path


MakeVerifier = Callable[..., JwtVerifier]


@pytest.fixture
def make_verifier(jwks_path: Path) -> MakeVerifier:
    def make(**overrides: Any) -> JwtVerifier:
        settings: dict[str, Any] = {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_file": str(jwks_path),
            **overrides,
        }
        return JwtVerifier(**settings)

    return make


def _refused(verifier: JwtVerifier, token: str, reason: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    assert caught.value.reason == reason
    # An empty "token" is trivially a substring of anything.
    assert not token or token not in str(caught.value)
    return caught.value


def test_a_valid_rs256_token_gives_the_claimed_identity(
    make_verifier: MakeVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, "rsa-1")
    identity = make_verifier().verify(token)
    assert identity.tenant_id == "team-a"
    assert identity.role is Role.WRITER
    assert identity.subject == "jwt:user-42"
    assert identity.authorization == f"Bearer {token}"
    assert not identity.service


def test_a_valid_es256_token_is_accepted_and_the_role_is_case_insensitive(
    make_verifier: MakeVerifier, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    token = sign(ec_key, "ec-1", "ES256", role="Admin", tenant="team-b")
    identity = make_verifier().verify(token)
    assert (identity.tenant_id, identity.role) == ("team-b", Role.ADMIN)


def test_custom_claim_names_are_read(
    make_verifier: MakeVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, "rsa-1", org="team-c", perm="reader")
    identity = make_verifier(tenant_claim="org", role_claim="perm").verify(token)
    assert (identity.tenant_id, identity.role) == ("team-c", Role.READER)


def test_an_expired_token_is_refused_as_expired(
    make_verifier: MakeVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    token = sign(rsa_key, "rsa-1", exp=now - 120, iat=now - 600)
    error = _refused(make_verifier(), token, "TOKEN_EXPIRED")
    assert "expired" in error.message


def test_leeway_covers_a_token_that_expired_moments_ago(
    make_verifier: MakeVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, "rsa-1", exp=int(time.time()) - 5)
    assert make_verifier(leeway_seconds=30).verify(token).tenant_id == "team-a"
    _refused(make_verifier(leeway_seconds=0), token, "TOKEN_EXPIRED")


def test_a_token_from_another_issuer_is_refused(
    make_verifier: MakeVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, "rsa-1", iss="https://evil.example.com/")
    error = _refused(make_verifier(), token, "TOKEN_INVALID")
    assert error.message == "The token's issuer is not accepted."
    assert "evil" not in error.message


def test_a_token_for_another_audience_is_refused(
    make_verifier: MakeVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, "rsa-1", aud="someone-else")
    error = _refused(make_verifier(), token, "TOKEN_INVALID")
    assert "audience" in error.message
    assert "someone-else" not in error.message


def test_a_token_signed_by_a_key_outside_the_set_is_refused(make_verifier: MakeVerifier) -> None:
    # Names a known kid, but the signature is by a different key.
    token = sign(new_rsa(), "rsa-1")
    error = _refused(make_verifier(), token, "TOKEN_INVALID")
    assert "signature" in error.message


def test_an_unknown_kid_is_refused_as_key_unknown(
    make_verifier: MakeVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, "rsa-404")
    error = _refused(make_verifier(), token, "TOKEN_KEY_UNKNOWN")
    assert "rsa-404" not in error.message


def test_an_unsigned_token_is_refused(make_verifier: MakeVerifier) -> None:
    token = jwt.encode(claims(), "", algorithm="none", headers={"kid": "rsa-1"})
    error = _refused(make_verifier(), token, "TOKEN_INVALID")
    assert "algorithm" in error.message


def test_an_hmac_token_keyed_with_the_public_key_is_refused(
    make_verifier: MakeVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    # Algorithm confusion: the public key is no secret, so an HS256 token "signed" with it
    # must never verify against that key.
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # PyJWT itself refuses a PEM as an HMAC secret, so sign by hand as an attacker would.
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"})
    payload = _b64(claims())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{base64url_encode(signature).decode()}"
    error = _refused(make_verifier(), forged, "TOKEN_INVALID")
    assert "algorithm" in error.message


def test_an_algorithm_that_does_not_fit_the_key_is_refused(
    make_verifier: MakeVerifier, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    # A valid ES256 signature, but the token names the RSA key.
    token = sign(ec_key, "rsa-1", "ES256")
    _refused(make_verifier(), token, "TOKEN_INVALID")


def test_a_pinned_jwk_algorithm_must_match_the_header(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    path = tmp_path / "pinned.json"
    write_jwks(path, {**public_jwk(rsa_key, "rsa-1"), "alg": "PS256"})
    verifier = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_file=str(path))
    assert verifier.verify(sign(rsa_key, "rsa-1", "PS256")).tenant_id == "team-a"
    _refused(verifier, sign(rsa_key, "rsa-1", "RS256"), "TOKEN_INVALID")


def test_a_token_without_a_tenant_is_refused(
    make_verifier: MakeVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, "rsa-1", tenant=None)
    error = _refused(make_verifier(), token, "TOKEN_INVALID")
    assert "'tenant'" in error.message


def test_an_unknown_role_is_refused(
    make_verifier: MakeVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, "rsa-1", role="superuser")
    error = _refused(make_verifier(), token, "TOKEN_INVALID")
    assert "'role'" in error.message
    assert "superuser" not in error.message


def test_a_token_without_a_subject_is_refused(
    make_verifier: MakeVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, "rsa-1", sub=None)
    error = _refused(make_verifier(), token, "TOKEN_INVALID")
    assert "'sub'" in error.message


def test_a_token_without_an_expiry_is_refused(
    make_verifier: MakeVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, "rsa-1", exp=None)
    error = _refused(make_verifier(), token, "TOKEN_INVALID")
    assert "'exp'" in error.message


def test_without_a_kid_only_a_single_key_set_is_used(
    tmp_path: Path, make_verifier: MakeVerifier, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = sign(rsa_key, None)
    _refused(make_verifier(), token, "TOKEN_INVALID")
    path = tmp_path / "single.json"
    write_jwks(path, public_jwk(rsa_key, "rsa-1"))
    verifier = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_file=str(path))
    assert verifier.verify(token).subject == "jwt:user-42"


def test_garbage_is_refused_as_invalid(make_verifier: MakeVerifier) -> None:
    for token in ("tdm_abc123", "a.b.c", "", "..."):
        _refused(make_verifier(), token, "TOKEN_INVALID")


def test_a_rotated_key_set_is_picked_up(
    make_verifier: MakeVerifier, jwks_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = make_verifier(reload_seconds=0)
    old_token = sign(rsa_key, "rsa-1")
    assert verifier.verify(old_token).tenant_id == "team-a"

    new_key = new_rsa()
    write_jwks(jwks_path, public_jwk(new_key, "rsa-2"))
    _bump_mtime(jwks_path)

    assert verifier.verify(sign(new_key, "rsa-2")).tenant_id == "team-a"
    _refused(verifier, old_token, "TOKEN_KEY_UNKNOWN")


def test_a_broken_key_file_on_reload_keeps_the_previous_keys(
    make_verifier: MakeVerifier,
    jwks_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    verifier = make_verifier(reload_seconds=0)
    token = sign(rsa_key, "rsa-1")
    jwks_path.write_text('{"keys": [', encoding="utf-8")
    _bump_mtime(jwks_path)
    with caplog.at_level(logging.ERROR, logger="shared.auth.reloading"):
        assert verifier.verify(token).tenant_id == "team-a"
    assert any(
        "JWKS not reloaded, keeping the previous one" in record.message for record in caplog.records
    )


def test_a_reload_waits_for_reload_seconds(
    make_verifier: MakeVerifier, jwks_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = make_verifier(reload_seconds=3600)
    token = sign(rsa_key, "rsa-1")
    verifier.verify(token)
    write_jwks(jwks_path, public_jwk(new_rsa(), "rsa-2"))
    _bump_mtime(jwks_path)
    assert verifier.verify(token).tenant_id == "team-a"


@pytest.mark.parametrize(
    "content",
    [
        None,
        "not json",
        '{"keys": {}}',
        '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}',
        '{"keys": [{"kty": "RSA", "n": "AQAB"}]}',
    ],
)
def test_an_unusable_key_file_at_start_is_a_value_error(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=r"jwks\.json"):
        JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_file=str(path))


def test_a_private_key_in_the_set_is_refused(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "jwks.json"
    private = RSAAlgorithm.to_jwk(rsa_key, as_dict=True)
    write_jwks(path, {**private, "kid": "rsa-1"})
    with pytest.raises(ValueError, match="private"):
        JwtVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_file=str(path))


def test_looks_like_jwt(rsa_key: rsa.RSAPrivateKey) -> None:
    assert looks_like_jwt(sign(rsa_key, "rsa-1"))
    assert not looks_like_jwt("tdm_abc123")
    assert not looks_like_jwt("a..c")
    assert not looks_like_jwt("a.b.c.d")
    assert not looks_like_jwt("a.b.c\n")
