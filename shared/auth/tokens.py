"""JWT bearer tokens: verified against a JSON Web Key Set file, mapped to a tenant and a role.

An identity provider signs the tokens; Tandem holds only its public keys, as a JWKS file:

    {"keys": [{"kty": "RSA", "kid": "2024-06", "n": "...", "e": "AQAB"}]}

Only asymmetric signatures are accepted (RS*, PS*, ES*, EdDSA), so a leaked key file lets
no one mint tokens. A token must name its key by `kid` (unless the set holds exactly one
key), carry `exp`, `iss`, `aud` and `sub`, and name a tenant and a role in its claims; a
team claim is optional.

The file is re-read when it changes, so the provider's keys rotate without a restart.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt.exceptions import InvalidSubjectError

from shared.auth.identity import Identity, Role
from shared.auth.keys import MAX_TEAM_LENGTH
from shared.auth.reloading import ReloadingFile
from shared.errors import Unauthenticated

_log = logging.getLogger(__name__)

_ROLES = {"reader": Role.READER, "writer": Role.WRITER, "admin": Role.ADMIN}

_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP_CURVES = ("Ed25519", "Ed448")
# Deliberately no "none" and no HS*: a shared secret in the key file would let anyone who
# reads it mint tokens, and accepting HS* invites signing with a public key as the secret.
ALLOWED_ALGORITHMS = frozenset((*_RSA_ALGORITHMS, *_EC_ALGORITHMS.values(), "EdDSA"))

_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]

_SEGMENT = "[A-Za-z0-9_-]+"
_JWT_SHAPE = re.compile(rf"{_SEGMENT}\.{_SEGMENT}\.{_SEGMENT}")

TOKEN_INVALID = "TOKEN_INVALID"
TOKEN_EXPIRED = "TOKEN_EXPIRED"
TOKEN_KEY_UNKNOWN = "TOKEN_KEY_UNKNOWN"


class JwksFileError(ValueError):
    """The key set cannot be used; the message names the file and the key at fault."""


def looks_like_jwt(token: str) -> bool:
    """Whether token has the shape of a signed JWT: three non-empty base64url segments."""
    return _JWT_SHAPE.fullmatch(token) is not None


def _invalid(message: str) -> Unauthenticated:
    return Unauthenticated(message, reason=TOKEN_INVALID)


@dataclass(frozen=True)
class _Key:
    """One verification key, bound to each algorithm it may verify."""

    kid: str | None
    by_algorithm: Mapping[str, jwt.PyJWK]


def _algorithms_for(raw: Mapping[str, Any], where: str) -> tuple[str, ...]:
    # The algorithms follow from the key type (and curve), so a token cannot ask for an
    # RSA key to be used as, say, an EC or HMAC key.
    kty = raw.get("kty")
    if kty == "RSA":
        candidates: tuple[str, ...] = _RSA_ALGORITHMS
    elif kty == "EC":
        curve = raw.get("crv")
        if curve not in _EC_ALGORITHMS:
            raise JwksFileError(f"{where}.crv: one of {', '.join(_EC_ALGORITHMS)}")
        candidates = (_EC_ALGORITHMS[curve],)
    elif kty == "OKP":
        if raw.get("crv") not in _OKP_CURVES:
            raise JwksFileError(f"{where}.crv: one of {', '.join(_OKP_CURVES)}")
        candidates = ("EdDSA",)
    else:
        raise JwksFileError(f"{where}.kty: one of RSA, EC, OKP (asymmetric keys only)")
    pinned = raw.get("alg")
    if pinned is None:
        return candidates
    if pinned not in candidates:
        raise JwksFileError(f"{where}.alg: one of {', '.join(candidates)} for this key type")
    return (pinned,)


def _parse_key(raw: Any, where: str) -> _Key | None:
    if not isinstance(raw, Mapping):
        raise JwksFileError(f"{where}: expected an object")
    if raw.get("use", "sig") != "sig":
        # Encryption keys may share a provider's set; they never verify a signature.
        return None
    if "d" in raw:
        raise JwksFileError(f"{where}: holds a private key; the set must hold public keys only")
    kid = raw.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise JwksFileError(f"{where}.kid: expected a non-empty string")
    by_algorithm: dict[str, jwt.PyJWK] = {}
    for algorithm in _algorithms_for(raw, where):
        try:
            by_algorithm[algorithm] = jwt.PyJWK(dict(raw), algorithm=algorithm)
        except jwt.PyJWTError:
            # PyJWT's message repeats the whole JWK; the location is enough.
            raise JwksFileError(f"{where}: not a usable {algorithm} key") from None
    return _Key(kid, by_algorithm)


def _parse_jwks(text: str, source: str) -> list[_Key]:
    """The usable keys of a JWKS document; JwksFileError names the key at fault."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise JwksFileError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise JwksFileError(f"{source}: expected an object with a list under 'keys'")
    keys: list[_Key] = []
    kids: set[str] = set()
    for index, raw in enumerate(document["keys"]):
        where = f"{source}: keys[{index}]"
        key = _parse_key(raw, where)
        if key is None:
            continue
        if key.kid is not None:
            if key.kid in kids:
                raise JwksFileError(f"{where}.kid: used by an earlier key")
            kids.add(key.kid)
        keys.append(key)
    return keys


class JwtVerifier:
    """Verifies bearer JWTs against the keys in a JWKS file, re-read when the file changes."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_file: str,
        tenant_claim: str = "tenant",
        role_claim: str = "role",
        leeway_seconds: float = 30.0,
        reload_seconds: float = 2.0,
        team_claim: str = "team",
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._path = Path(jwks_file)
        self._tenant_claim = tenant_claim
        self._role_claim = role_claim
        self._team_claim = team_claim
        self._leeway = leeway_seconds
        try:
            self._jwks = ReloadingFile(self._path, _parse_jwks, reload_seconds, "JWKS")
        except (OSError, UnicodeDecodeError) as exc:
            raise JwksFileError(f"{self._path}: cannot read the JWKS file: {exc}") from None
        if not self._jwks.current():
            _log.warning("JWKS file %s holds no signing keys: every token is refused", self._path)

    def _select_key(self, header: Mapping[str, Any]) -> _Key:
        keys = self._jwks.current()
        kid = header.get("kid")
        if kid is None:
            # Without a kid the choice would be a guess, unless there is nothing to choose.
            if len(keys) == 1:
                return keys[0]
            raise _invalid("The token names no signing key (kid) and the key set has several.")
        if not isinstance(kid, str):
            raise _invalid("The token's 'kid' header must be a string.")
        for key in keys:
            if key.kid == kid:
                return key
        raise Unauthenticated(
            "The token's signing key is not known (unknown or rotated out).",
            reason=TOKEN_KEY_UNKNOWN,
        )

    def verify(self, token: str) -> Identity:
        """The caller token authenticates; Unauthenticated (with a TOKEN_* reason) if none."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("The token is not a well-formed JWT.") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in ALLOWED_ALGORITHMS:
            raise _invalid("The token's signing algorithm is not accepted.")
        key = self._select_key(header)
        bound = key.by_algorithm.get(algorithm)
        if bound is None:
            raise _invalid("The token's signing algorithm does not match its signing key.")
        claims = self._decode(token, bound, algorithm)
        return Identity(
            tenant_id=self._tenant(claims),
            role=self._role(claims),
            subject=f"jwt:{claims['sub']}",
            authorization=f"Bearer {token}",
            team=self._team(claims),
        )

    def _decode(self, token: str, key: jwt.PyJWK, algorithm: str) -> dict[str, Any]:
        # PyJWT's own messages can quote header or claim values, so each error gets a fixed
        # message here; none repeats the token or what it claims.
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("The token has expired.", reason=TOKEN_EXPIRED) from None
        except jwt.ImmatureSignatureError:
            raise _invalid("The token is not valid yet.") from None
        except jwt.InvalidIssuerError:
            raise _invalid("The token's issuer is not accepted.") from None
        except jwt.InvalidAudienceError:
            raise _invalid("The token's audience is not accepted.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"The token has no '{exc.claim}' claim.") from None
        except jwt.InvalidSignatureError:
            raise _invalid("The token's signature does not verify.") from None
        except jwt.InvalidAlgorithmError:
            raise _invalid("The token's signing algorithm is not accepted.") from None
        except InvalidSubjectError:
            raise _invalid("The token's 'sub' claim must be a string.") from None
        except jwt.InvalidIssuedAtError:
            raise _invalid("The token's 'iat' claim must be a number.") from None
        except jwt.PyJWTError:
            raise _invalid("The token is not a well-formed JWT.") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise _invalid("The token's 'sub' claim must be a non-empty string.")
        return claims

    def _tenant(self, claims: Mapping[str, Any]) -> str:
        tenant = claims.get(self._tenant_claim)
        if tenant is None:
            raise _invalid(f"The token has no '{self._tenant_claim}' claim.")
        if not isinstance(tenant, str) or not tenant.strip():
            raise _invalid(f"The token's '{self._tenant_claim}' claim must be a non-empty string.")
        return tenant.strip()

    def _team(self, claims: Mapping[str, Any]) -> str:
        # Optional: a caller of no team sees what it owns and what its tenant shares.
        team = claims.get(self._team_claim)
        if team is None:
            return ""
        if not isinstance(team, str) or len(team.strip()) > MAX_TEAM_LENGTH:
            raise _invalid(
                f"The token's '{self._team_claim}' claim must be a string of at most "
                f"{MAX_TEAM_LENGTH} characters."
            )
        return team.strip()

    def _role(self, claims: Mapping[str, Any]) -> Role:
        role = claims.get(self._role_claim)
        if role is None:
            raise _invalid(f"The token has no '{self._role_claim}' claim.")
        if not isinstance(role, str) or role.strip().lower() not in _ROLES:
            raise _invalid(
                f"The token's '{self._role_claim}' claim must be one of reader, writer, admin."
            )
        return _ROLES[role.strip().lower()]
