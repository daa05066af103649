"""SessionService's client of ConfigService.

Deadlines are propagated by hand: each call gets min(the caller's time remaining, a cap), so
a slow ConfigService cannot hold a request past its own deadline. Only UNAVAILABLE is retried,
by the channel's service config. ConfigService's errors become domain errors, so the caller
gets the right status instead of UNKNOWN.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from session_service.fresh_reads import FreshReads
from session_service.prepare.source import Change, FetchedConfig
from shared._generated.tandem.config.v1 import (
    config_pb2,
    config_service_pb2,
    config_service_pb2_grpc,
)
from shared.auth.identity import current
from shared.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    TandemError,
    Unavailable,
)
from shared.visibility import Visibility


def _fetched(config: config_pb2.Config) -> FetchedConfig:
    kind = config_pb2.ConfigKind.Name(config.kind).removeprefix("CONFIG_KIND_")
    return FetchedConfig(
        config.config_id,
        config.name,
        config.revision,
        config.yaml_content,
        kind="BUNDLE" if kind == "UNSPECIFIED" else kind,
        namespace=config.namespace,
        path=config.path,
        source_uri=config.source_uri,
        owner=config.owner,
        # A ConfigService from before visibility sends none: its configs are the tenant's.
        visibility=_VISIBILITY.get(config.visibility, Visibility.ORG),
        team=config.team,
    )


_VISIBILITY = {
    config_pb2.VISIBILITY_PRIVATE: Visibility.PRIVATE,
    config_pb2.VISIBILITY_TEAM: Visibility.TEAM,
    config_pb2.VISIBILITY_ORG: Visibility.ORG,
}


def _reason(error: grpc.aio.AioRpcError) -> str:
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:
        return ""
    if status is None:
        return ""
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            return str(info.reason)
    return ""


def translate(error: grpc.aio.AioRpcError, what: str) -> TandemError:
    """A ConfigService failure as the error SessionService's caller should see."""
    code = error.code()
    reason = _reason(error)
    details = error.details() or ""
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFound(
            details or f"{what} was not found.",
            reason=reason or "CONFIG_NOT_FOUND",
            resource_type="Config",
            resource_name=what,
        )
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(details, reason=reason or "INVALID_ARGUMENT")
    if code is grpc.StatusCode.OUT_OF_RANGE:
        return OutOfRange(details, reason=reason or "OUT_OF_RANGE")
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return PermissionDenied(details, reason=reason or "CONFIG_ACCESS_DENIED")
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(details, reason=reason or "FAILED_PRECONDITION")
    # Down, overloaded, timed out or broken: the caller may retry later.
    return Unavailable(
        f"ConfigService is unavailable ({code.name}) while fetching {what}.",
        reason="CONFIG_SERVICE_UNAVAILABLE",
        metadata={"upstream_code": code.name},
    )


def call_timeout(time_remaining: float | None, cap: float) -> float:
    """The timeout of an outgoing call: the caller's time remaining, at most cap."""
    if time_remaining is None:
        return cap
    return max(0.0, min(time_remaining, cap))


class ConfigClient:
    """Fetches configs and follows their changes."""

    def __init__(
        self,
        stub: config_service_pb2_grpc.ConfigServiceAsyncStub,
        call_timeout: float,
        service_key: str = "",
    ) -> None:
        self._stub = stub
        self._call_timeout = call_timeout
        self._latest: FreshReads[FetchedConfig] = FreshReads()
        # Only the change stream runs as SessionService itself; reads act for the caller.
        self._watch_metadata = (
            (("authorization", f"Bearer {service_key}"),) if service_key else None
        )

    @staticmethod
    def _caller() -> tuple[tuple[str, str], ...] | None:
        """The caller's credential, so ConfigService scopes the read to the caller's tenant."""
        authorization = current().authorization
        return (("authorization", authorization),) if authorization else None

    def _timeout(self, time_remaining: float | None) -> float:
        return call_timeout(time_remaining, self._call_timeout)

    async def get(
        self, config_id: str, revision: int = 0, time_remaining: float | None = None
    ) -> FetchedConfig:
        """One revision (0: the latest) of a config.

        The latest is read by a call that started after this one was made, shared with every
        caller holding the same credential who asks meanwhile: never older than a write the
        caller saw finish, and one GetConfig serves a burst of creates.
        """
        if revision:
            return await self._get(config_id, revision, time_remaining)
        key = (current().authorization, config_id)
        try:
            return await self._latest.read(
                key, lambda: self._get(config_id, 0, None), self._timeout(time_remaining)
            )
        except TimeoutError:
            raise Unavailable(
                f"ConfigService is unavailable (DEADLINE_EXCEEDED) while fetching config "
                f"{config_id!r}.",
                reason="CONFIG_SERVICE_UNAVAILABLE",
                metadata={"upstream_code": grpc.StatusCode.DEADLINE_EXCEEDED.name},
            ) from None

    async def _get(
        self, config_id: str, revision: int, time_remaining: float | None
    ) -> FetchedConfig:
        try:
            config = await self._stub.GetConfig(
                config_service_pb2.GetConfigRequest(config_id=config_id, revision=revision),
                timeout=self._timeout(time_remaining),
                metadata=self._caller(),
            )
        except grpc.aio.AioRpcError as exc:
            what = f"config {config_id!r}" + (f" revision {revision}" if revision else "")
            raise translate(exc, what) from exc
        return _fetched(config)

    async def get_by_name(self, name: str, time_remaining: float | None = None) -> FetchedConfig:
        """The latest revision of the live config called name."""
        found = await self.find(
            f"name = {json.dumps(name)}", time_remaining, limit=1, what=f"config named {name!r}"
        )
        if not found:
            raise NotFound(
                f"No config named {name!r}.",
                reason="CONFIG_NOT_FOUND",
                resource_type="Config",
                resource_name=name,
            )
        return found[0]

    async def find(
        self,
        filter_text: str,
        time_remaining: float | None = None,
        limit: int = 100,
        what: str = "configs",
    ) -> list[FetchedConfig]:
        """Live configs matching a ListConfigs filter, full content, at most limit."""
        request = config_service_pb2.ListConfigsRequest(
            filter=filter_text, page_size=limit, view=config_pb2.CONFIG_VIEW_FULL
        )
        try:
            page = await self._stub.ListConfigs(
                request, timeout=self._timeout(time_remaining), metadata=self._caller()
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, what) from exc
        return [_fetched(config) for config in page.configs]

    async def watch(
        self, after_sequence: int, established: Callable[[], None]
    ) -> AsyncIterator[Change]:
        """ConfigService's change stream after after_sequence (0: from now on).

        established is called once the server has accepted the stream, before any change.
        """
        call = self._stub.WatchConfigs(
            config_service_pb2.WatchConfigsRequest(after_sequence=after_sequence),
            metadata=self._watch_metadata,
        )
        try:
            await call.initial_metadata()
            # A refused stream ends with trailers only; it was never established.
            if not call.done():
                established()
            async for change in call:
                yield Change(
                    sequence=change.sequence,
                    config_id=change.config_id,
                    name=change.name,
                    revision=change.revision,
                    created=change.type == config_pb2.CHANGE_TYPE_CREATED,
                    deleted=change.type == config_pb2.CHANGE_TYPE_DELETED,
                )
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "the change stream") from exc
        finally:
            call.cancel()
