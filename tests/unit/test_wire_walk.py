"""The wire walk that names what made a request undecodable: bounded in depth, time and memory."""

from __future__ import annotations

import tracemalloc

import pytest
from google.protobuf.message import DecodeError

from shared._generated.tandem.config.v1 import config_pb2, config_service_pb2
from shared._generated.tandem.session.v1 import session_service_pb2
from shared.rpc.wire import MAX_DEPTH, Problem, find_problem, largest_field
from tests.support.wire import deep_struct, field, padded_leaf, send_message_bytes

SEND = session_service_pb2.SendMessageRequest.DESCRIPTOR
CREATE = config_service_pb2.CreateConfigRequest.DESCRIPTOR


def test_a_ten_thousand_level_struct_is_too_deep_at_its_field() -> None:
    data = send_message_bytes("s", deep_struct(10_000))
    with pytest.raises(DecodeError):
        session_service_pb2.SendMessageRequest.FromString(data)
    problem = find_problem(SEND, data)
    assert problem is not None
    assert (problem.field, problem.problem) == ("context", Problem.TOO_DEEP)


def test_nesting_the_decoder_accepts_is_not_a_problem() -> None:
    # 33 Struct levels reach depth 100 exactly: the decoder's own limit.
    data = send_message_bytes("s", deep_struct(33))
    session_service_pb2.SendMessageRequest.FromString(data)
    assert find_problem(SEND, data) is None
    assert find_problem(SEND, send_message_bytes("s", deep_struct(34))) is not None
    assert MAX_DEPTH == 100


def test_walking_a_deep_padded_request_copies_nothing() -> None:
    # Copying the remaining bytes at each of 400 levels would take about 400 MiB here.
    data = send_message_bytes("s", deep_struct(400, padded_leaf(1024 * 1024)))
    tracemalloc.start()
    try:
        problem = find_problem(SEND, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problem is not None
    assert problem.problem is Problem.TOO_DEEP
    assert peak < 2 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


def test_invalid_utf8_is_located_by_field_line_and_column() -> None:
    good = config_service_pb2.CreateConfigRequest(
        config=config_pb2.Config(name="bad-bytes", yaml_content="bundle:\n  name: \x01\n")
    ).SerializeToString()
    problem = find_problem(CREATE, good.replace(b"\x01", b"\xff"))
    assert problem is not None
    assert problem.problem is Problem.INVALID_UTF8
    assert (problem.field, problem.line, problem.column) == ("config.yaml_content", 2, 9)


def test_a_bad_map_value_is_named_by_its_map() -> None:
    good = config_service_pb2.CreateConfigRequest(
        config=config_pb2.Config(name="bad-bytes", tags={"team": "x\x01"})
    ).SerializeToString()
    problem = find_problem(CREATE, good.replace(b"\x01", b"\xfe"))
    assert problem is not None
    assert problem.field == "config.tags"


@pytest.mark.parametrize(
    "data",
    [
        b"\xff" * 64,  # a varint that never ends
        field(4, b"\x0a\xff\xff\xff\xff\x0f"),  # a length far past the end
        b"\x0b\x0c",  # groups
        b"",
    ],
)
def test_malformed_bytes_are_no_named_problem_and_never_an_exception(data: bytes) -> None:
    assert find_problem(SEND, data) is None
    assert isinstance(largest_field(SEND, data), str)


def test_the_field_budget_stops_the_walk() -> None:
    data = b"\x28\x01" * 10_000 + field(2, b"\xff")  # many unknown varints, then bad UTF-8
    assert find_problem(SEND, data, max_fields=100) is None
    assert find_problem(SEND, data) is not None


def test_the_largest_field_names_what_made_a_request_too_large() -> None:
    data = config_service_pb2.CreateConfigRequest(
        request_id="r",
        config=config_pb2.Config(name="n", description="d", yaml_content="x" * 10_000),
    ).SerializeToString()
    assert largest_field(CREATE, data) == "config.yaml_content"
    tags = config_service_pb2.CreateConfigRequest(
        config=config_pb2.Config(name="n", tags={f"k{n}": "v" for n in range(1000)})
    ).SerializeToString()
    assert largest_field(CREATE, tags) == "config.tags"
    context = send_message_bytes("s", deep_struct(3, padded_leaf(5000)))
    assert largest_field(SEND, context) == "context"
