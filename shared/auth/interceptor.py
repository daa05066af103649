"""Authenticates every call to a Tandem service and checks the caller's role for the method.

Callers present an API key or, where an identity provider is configured, a JWT. Health and
reflection stay open. With neither configured the server runs in development
mode: every call acts as the admin of the default tenant (and start-up says so loudly).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from shared.auth.identity import DEVELOPMENT, Identity, Role, act_as
from shared.auth.keys import KeyStore
from shared.auth.tokens import JwtVerifier, looks_like_jwt
from shared.errors import PermissionDenied, Unauthenticated
from shared.rpc.handlers import WrappingInterceptor

_Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class AccessPolicy:
    """The role each of a service's methods needs, and what a service identity may call."""

    service: str  # full proto name, e.g. tandem.config.v1.ConfigService
    roles: Mapping[str, Role]  # method name -> least role; methods not listed need ADMIN
    service_methods: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls,
        service: str,
        *,
        readers: Iterable[str],
        writers: Iterable[str],
        service_methods: Iterable[str] = (),
    ) -> AccessPolicy:
        """Readers' methods, writers' methods; every other method needs ADMIN."""
        roles = {**dict.fromkeys(readers, Role.READER), **dict.fromkeys(writers, Role.WRITER)}
        return cls(service, roles, frozenset(service_methods))

    def needed(self, method: str) -> Role:
        """The least role method needs."""
        return self.roles.get(method, Role.ADMIN)


def _bearer(context: _Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(
                    "The authorization metadata must be 'Bearer <key>'.",
                    reason="MALFORMED_CREDENTIALS",
                )
            return token.strip()
    raise Unauthenticated(
        "This call needs an API key: send metadata 'authorization: Bearer <key>'.",
        reason="CREDENTIALS_MISSING",
    )


class AuthInterceptor(WrappingInterceptor):
    """Sets the caller's identity for the handler, or refuses the call."""

    def __init__(
        self, keys: KeyStore, policy: AccessPolicy, tokens: JwtVerifier | None = None
    ) -> None:
        self._keys = keys
        self._policy = policy
        self._tokens = tokens
        self._prefix = f"/{policy.service}/"

    def authenticate(self, context: _Context) -> Identity:
        """The caller, from its bearer key or JWT; Unauthenticated when there is none that works."""
        if not self._keys.enabled and self._tokens is None:
            return DEVELOPMENT
        key = _bearer(context)
        if self._tokens is not None and looks_like_jwt(key):
            return self._tokens.verify(key)
        entry = self._keys.lookup(key)
        if entry is None:
            raise Unauthenticated(
                "The API key is not valid (unknown, revoked or rotated out).",
                reason="CREDENTIALS_INVALID",
            )
        return entry.identity(f"Bearer {key}")

    def authorize(self, identity: Identity, method: str) -> None:
        """Raises PermissionDenied unless identity may call method."""
        if identity.service:
            if method in self._policy.service_methods:
                return
            raise PermissionDenied(
                f"A service identity may not call {method}.",
                reason="ROLE_NOT_ALLOWED",
                metadata={"method": method, "role": "service"},
            )
        needed = self._policy.needed(method)
        if not identity.may(needed):
            role = identity.role.name.lower() if identity.role else "none"
            raise PermissionDenied(
                f"{method} needs the {needed.name.lower()} role; this key is {role}.",
                reason="ROLE_NOT_ALLOWED",
                metadata={"method": method, "role": role, "needed": needed.name.lower()},
            )

    def _admit(self, context: _Context, method: str) -> None:
        identity = self.authenticate(context)
        self.authorize(identity, method)
        act_as(identity)

    def pick(self, full_method: str) -> str | None:
        # Health and reflection are other services: they stay open.
        if not full_method.startswith(self._prefix):
            return None
        return full_method[len(self._prefix) :]

    def wrap_unary(self, behavior: Any, method: str) -> Any:
        async def admitted(request: Any, context: _Context) -> Any:
            self._admit(context, method)
            result = behavior(request, context)
            return (await result) if inspect.isawaitable(result) else result

        return admitted

    def wrap_stream(self, behavior: Any, method: str) -> Any:
        async def admitted(request: Any, context: _Context) -> AsyncIterator[Any]:
            self._admit(context, method)
            async for response in behavior(request, context):
                yield response

        return admitted


def authentication(
    keys: KeyStore, policy: AccessPolicy, tokens: JwtVerifier | None = None
) -> AuthInterceptor:
    """The interceptor for a server; says loudly when it runs without keys."""
    if not keys.enabled and tokens is None:
        logging.getLogger(__name__).warning(
            "%s: DEVELOPMENT MODE, no API keys configured (TANDEM_API_KEYS_FILE or "
            "TANDEM_API_KEYS): every caller acts as admin of tenant '%s'. Do not expose "
            "this server.",
            policy.service,
            DEVELOPMENT.tenant_id,
        )
    return AuthInterceptor(keys, policy, tokens)
