"""The one mapping from domain errors to gRPC status codes and google.rpc details."""

from __future__ import annotations

import logging
import sqlite3
from typing import TypeVar

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import exc as sa_exc

from shared.errors import (
    Aborted,
    AlreadyExists,
    ErrorKind,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PreconditionViolation,
    QuotaViolation,
    ResourceExhausted,
    TandemError,
    elide,
)
from shared.rpc.status import (
    ERROR_DOMAIN,
    MAX_ECHO_BYTES,
    MAX_LISTED_VIOLATIONS,
    MAX_MESSAGE_BYTES,
    MAX_STATUS_BYTES,
    MORE_VIOLATIONS_KEY,
    STATUS_CODES,
    as_tandem_error,
    to_status,
    trailing_metadata,
)

T = TypeVar("T")


def unpack(status: status_pb2.Status, kind: type[T]) -> list[T]:
    found = []
    for detail in status.details:
        message = kind()
        if detail.Unpack(message):
            found.append(message)
    return found


def test_every_kind_maps_to_the_status_code_of_the_same_name() -> None:
    for kind in ErrorKind:
        assert STATUS_CODES[kind].name == kind.value
    assert STATUS_CODES[ErrorKind.ABORTED] is grpc.StatusCode.ABORTED


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (Aborted("x"), grpc.StatusCode.ABORTED),
        (OutOfRange("x"), grpc.StatusCode.OUT_OF_RANGE),
        (ResourceExhausted("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_status_code_and_message_match_the_error(error: TandemError, code: grpc.StatusCode) -> None:
    status = to_status(error)
    assert status.code == code.value[0]
    assert status.message == "x"


def test_every_status_carries_error_info_in_the_tandem_domain() -> None:
    status = to_status(
        FailedPrecondition("busy", reason="TURN_IN_PROGRESS", metadata={"turn_id": "t-1"})
    )
    [info] = unpack(status, error_details_pb2.ErrorInfo)
    assert info.reason == "TURN_IN_PROGRESS"
    assert info.domain == ERROR_DOMAIN == "tandem.dev"
    assert dict(info.metadata) == {"turn_id": "t-1"}


def test_validation_errors_carry_located_field_violations() -> None:
    status = to_status(
        InvalidArgument(
            "bad document",
            violations=[
                FieldViolation("yaml_content.tools[0].module", "is required", line=7, column=5),
                FieldViolation("page_size", "must not be negative"),
            ],
        )
    )
    [bad_request] = unpack(status, error_details_pb2.BadRequest)
    fields = [(v.field, v.description) for v in bad_request.field_violations]
    assert fields == [
        ("yaml_content.tools[0].module", "is required (line 7, column 5)"),
        ("page_size", "must not be negative"),
    ]


def test_precondition_and_concurrency_errors_carry_precondition_failure() -> None:
    for error_type in (FailedPrecondition, Aborted):
        status = to_status(
            error_type(
                "stale",
                violations=[PreconditionViolation("ETAG_MISMATCH", "configs/a", "etag differs")],
            )
        )
        [failure] = unpack(status, error_details_pb2.PreconditionFailure)
        assert [(v.type, v.subject) for v in failure.violations] == [("ETAG_MISMATCH", "configs/a")]


def test_quota_errors_carry_quota_failure() -> None:
    status = to_status(
        ResourceExhausted("quota", violations=[QuotaViolation("tenant:t1", "100 configs")])
    )
    [quota] = unpack(status, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject == "tenant:t1"


def test_missing_resources_carry_resource_info() -> None:
    status = to_status(NotFound("no such config", resource_type="Config", resource_name="c1"))
    [info] = unpack(status, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("Config", "c1")


def test_details_travel_in_the_standard_trailer() -> None:
    status = to_status(NotFound("gone"))
    [(key, value)] = trailing_metadata(status)
    assert key == "grpc-status-details-bin"
    assert status_pb2.Status.FromString(value) == status


def test_unexpected_exceptions_become_internal_without_leaking_their_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        error = as_tandem_error(RuntimeError("password=hunter2 in SQL"), "/svc/Method")
    assert error.kind is ErrorKind.INTERNAL
    assert "hunter2" not in error.message
    assert "/svc/Method" in caplog.text


def test_not_implemented_becomes_unimplemented_naming_the_method() -> None:
    error = as_tandem_error(NotImplementedError(), "/tandem.config.v1.ConfigService/GetConfig")
    assert error.kind is ErrorKind.UNIMPLEMENTED
    assert error.metadata == {"method": "/tandem.config.v1.ConfigService/GetConfig"}


def test_domain_errors_pass_through_unchanged() -> None:
    original = Aborted("stale etag", reason="ETAG_MISMATCH")
    assert as_tandem_error(original) is original


# --- a database that cannot be reached is UNAVAILABLE, worth a retry -----------------------


def test_a_refused_database_connection_is_unavailable_with_retry_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused = psycopg.OperationalError("connection to server at 127.0.0.1 failed: refused")
    wrapped = sa_exc.OperationalError("SELECT 1", {"name": "secret-value"}, refused)
    with caplog.at_level(logging.WARNING):
        error = as_tandem_error(wrapped, "/tandem.config.v1.ConfigService/GetConfig")
    assert error.kind is ErrorKind.UNAVAILABLE
    assert error.reason == "DATABASE_UNAVAILABLE"
    status = to_status(error)
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    [retry] = unpack(status, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToTimedelta().total_seconds() > 0
    assert "GetConfig" in caplog.text
    assert "secret-value" not in caplog.text


def test_a_locked_sqlite_database_is_unavailable() -> None:
    locked = sa_exc.OperationalError("UPDATE x", {}, sqlite3.OperationalError("database is locked"))
    assert as_tandem_error(locked).kind is ErrorKind.UNAVAILABLE


def test_a_constraint_violation_stays_internal() -> None:
    violation = sa_exc.IntegrityError(
        "INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed: configs.name")
    )
    error = as_tandem_error(violation)
    assert (error.kind, error.message) == (ErrorKind.INTERNAL, "Internal error.")


# --- every echoed value is capped, so trailers fit a default client -------------------------


def test_a_long_id_is_echoed_capped_with_both_ends_kept() -> None:
    long_id = "head-" + "x" * 20_000 + "-tail"
    status = to_status(
        NotFound(
            f"Config {long_id!r} does not exist.",
            reason="CONFIG_NOT_FOUND",
            resource_type="Config",
            resource_name=long_id,
            metadata={"config_id": long_id},
        )
    )
    assert status.ByteSize() <= MAX_STATUS_BYTES
    assert len(status.message.encode()) <= MAX_MESSAGE_BYTES
    assert status.message.startswith("Config 'head-")
    assert status.message.endswith("-tail' does not exist.")
    [resource] = unpack(status, error_details_pb2.ResourceInfo)
    assert resource.resource_name.startswith("head-")
    assert resource.resource_name.endswith("-tail")
    [info] = unpack(status, error_details_pb2.ErrorInfo)
    assert len(info.metadata["config_id"]) <= MAX_ECHO_BYTES


def test_only_the_first_violations_are_listed_and_the_rest_counted() -> None:
    violations = [FieldViolation(f"config.tags[{n}]", "invalid tag key") for n in range(5_000)]
    status = to_status(InvalidArgument("The config has invalid fields.", violations=violations))
    [bad_request] = unpack(status, error_details_pb2.BadRequest)
    listed = len(bad_request.field_violations)
    assert listed == MAX_LISTED_VIOLATIONS
    [info] = unpack(status, error_details_pb2.ErrorInfo)
    assert info.metadata[MORE_VIOLATIONS_KEY] == str(5_000 - listed)
    assert f"{5_000 - listed} more" in status.message


def test_long_violations_are_trimmed_to_the_trailer_budget() -> None:
    violations = [
        FieldViolation("é" * 1000 + str(n), "ü" * 5000, line=n + 1, column=1) for n in range(50)
    ]
    status = to_status(InvalidArgument("bad" * 2000, violations=violations))
    assert status.ByteSize() <= MAX_STATUS_BYTES
    [bad_request] = unpack(status, error_details_pb2.BadRequest)
    [info] = unpack(status, error_details_pb2.ErrorInfo)
    assert len(bad_request.field_violations) + int(info.metadata[MORE_VIOLATIONS_KEY]) == 50
    for violation in bad_request.field_violations:
        assert len(violation.field.encode()) <= MAX_ECHO_BYTES


@pytest.mark.parametrize("limit", [3, 16, 64, 65, 66, 200])
def test_elide_keeps_whole_characters_within_the_limit(limit: int) -> None:
    for text in ("a" * 1000, "é" * 1000, "😀" * 1000):
        short = elide(text, limit)
        assert 0 < len(short.encode()) <= limit
        assert short.encode().decode() == short
    assert elide("short", 64) == "short"
