"""An identity provider in miniature: signing keys, their JWKS file, and signed tokens."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://idp.example.com/"
AUDIENCE = "tandem"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_rsa() -> rsa.RSAPrivateKey:
    """A fresh RSA signing key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_ec() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 signing key."""
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    """The key's public half as a JWK."""
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid}


def write_jwks(path: Path, *jwks: dict[str, Any]) -> None:
    """Writes a JWKS file holding jwks."""
    path.write_text(json.dumps({"keys": list(jwks)}), encoding="utf-8")


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for a writer of team-a; an override of None drops that claim."""
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-42",
        "exp": now + 300,
        "iat": now,
        "tenant": "team-a",
        "role": "writer",
    }
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


def sign(key: PrivateKey, kid: str | None, algorithm: str = "RS256", **overrides: Any) -> str:
    """A token over claims(**overrides), signed by key."""
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**overrides), key, algorithm=algorithm, headers=headers)
