"""tandem_client decodes a rich google.rpc.Status, every detail kind, into its error tree."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from tandem_client import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TandemError,
    Unauthenticated,
    Unavailable,
)
from tandem_client.errors import ERROR_CLASSES, error_from_status


def packed(message: Message) -> any_pb2.Any:
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped


def status(code: grpc.StatusCode, message: str, *details: Message) -> status_pb2.Status:
    return status_pb2.Status(
        code=code.value[0], message=message, details=[packed(d) for d in details]
    )


def test_every_detail_kind_is_decoded() -> None:
    delay = duration_pb2.Duration()
    delay.FromTimedelta(timedelta(seconds=1.5))
    bad_request = error_details_pb2.BadRequest()
    bad_request.field_violations.add(
        field="config.yaml_content.tools[0].module",
        description="a tool needs a module (line 4, column 5)",
    )
    bad_request.field_violations.add(field="config.name", description="is required")
    failure = error_details_pb2.PreconditionFailure()
    failure.violations.add(type="ETAG_MISMATCH", subject="configs/c1", description="etag is stale")
    quota = error_details_pb2.QuotaFailure()
    quota.violations.add(subject="tenant:acme", description="100 sessions at most")
    error = error_from_status(
        status(
            grpc.StatusCode.INVALID_ARGUMENT,
            "The bundle document is invalid (2 error(s))",
            error_details_pb2.ErrorInfo(
                reason="INVALID_BUNDLE", domain="tandem.dev", metadata={"config_id": "c1"}
            ),
            bad_request,
            failure,
            quota,
            error_details_pb2.RetryInfo(retry_delay=delay),
            error_details_pb2.ResourceInfo(
                resource_type="Config", resource_name="c1", description="the config"
            ),
        )
    )
    assert isinstance(error, InvalidArgument)
    assert isinstance(error, TandemError)
    assert (error.code, error.reason, error.domain) == (
        "INVALID_ARGUMENT",
        "INVALID_BUNDLE",
        "tandem.dev",
    )
    assert error.message == "The bundle document is invalid (2 error(s))"
    assert error.metadata == {"config_id": "c1"}
    assert error.field_violations == [
        ("config.yaml_content.tools[0].module", "a tool needs a module (line 4, column 5)"),
        ("config.name", "is required"),
    ]
    located, unlocated = error.field_violations
    assert (located.line, located.column) == (4, 5)
    assert (unlocated.line, unlocated.column) == (0, 0)
    assert error.precondition_violations == [("ETAG_MISMATCH", "configs/c1", "etag is stale")]
    assert error.quota_violations == [("tenant:acme", "100 sessions at most")]
    assert error.retry_delay == 1.5
    assert error.resource is not None
    assert (error.resource.resource_type, error.resource.resource_name) == ("Config", "c1")

    # One readable line, then every detail on its own line; never the packed bytes.
    assert (
        str(error) == "INVALID_ARGUMENT INVALID_BUNDLE: The bundle document is invalid (2 error(s))"
    )
    explained = error.explain().splitlines()
    assert explained[0] == str(error)
    assert "  config_id: c1" in explained
    assert (
        "  field config.yaml_content.tools[0].module: a tool needs a module (line 4, column 5)"
        in explained
    )
    assert "  precondition ETAG_MISMATCH configs/c1: etag is stale" in explained
    assert "  quota tenant:acme: 100 sessions at most" in explained
    assert "  resource: Config c1" in explained
    assert "  retry after: 1.5s" in explained
    assert "type.googleapis.com" not in error.explain()


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.ABORTED, Aborted),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
    ],
)
def test_each_status_class_has_its_exception(code: grpc.StatusCode, cls: type[TandemError]) -> None:
    error = error_from_status(status(code, "nope"))
    assert type(error) is cls
    assert error.code == code.name
    # No details: nothing invented.
    assert (error.reason, error.metadata, error.field_violations, error.retry_delay) == (
        "",
        {},
        [],
        None,
    )
    assert str(error) == f"{code.name}: nope"


def test_every_grpc_status_but_ok_maps_to_a_subclass() -> None:
    names = {code.name for code in grpc.StatusCode if code is not grpc.StatusCode.OK}
    assert set(ERROR_CLASSES) == names
    assert all(issubclass(cls, TandemError) for cls in ERROR_CLASSES.values())


def test_an_unknown_detail_kind_is_skipped() -> None:
    error = error_from_status(
        status(
            grpc.StatusCode.NOT_FOUND,
            "gone",
            error_details_pb2.Help(),
            error_details_pb2.ErrorInfo(reason="CONFIG_NOT_FOUND"),
        )
    )
    assert isinstance(error, NotFound)
    assert error.reason == "CONFIG_NOT_FOUND"
