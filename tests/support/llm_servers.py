"""Local HTTP servers that answer like the model APIs, so provider tests run the real SDKs.

A test scripts each response (a list of server-sent events, optionally slowed down or cut
off, or an HTTP error with a JSON body), points the provider's base_url at the server and
then asserts on what came back and on the requests the SDK sent.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# How often a delayed event checks whether the client went away or the server is closing.
_POLL_SECONDS = 0.01


@dataclass(frozen=True)
class SseEvent:
    """One server-sent event; delay is how long to wait before sending it."""

    data: str
    event: str | None = None
    delay: float = 0.0

    def encode(self) -> bytes:
        """The event as it goes on the wire."""
        lines = [f"event: {self.event}"] if self.event is not None else []
        lines.extend(f"data: {line}" for line in self.data.split("\n"))
        return ("\n".join(lines) + "\n\n").encode()


@dataclass(frozen=True)
class ScriptedResponse:
    """What the server answers to the next request."""

    status: int = 200
    events: Sequence[SseEvent] = ()
    # Set for a plain JSON answer (an HTTP error) instead of an event stream.
    json_body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Drop the connection after the events, without ending the chunked body.
    abort: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


def stream(events: Sequence[SseEvent], *, abort: bool = False) -> ScriptedResponse:
    """A 200 event-stream response."""
    return ScriptedResponse(events=tuple(events), abort=abort)


def error(status: int, body: Mapping[str, Any]) -> ScriptedResponse:
    """An HTTP error with a JSON body; retry-after-ms keeps retries (if any) fast."""
    return ScriptedResponse(status=status, json_body=body, headers={"retry-after-ms": "10"})


class LlmServer:
    """A threaded HTTP server on 127.0.0.1 that plays scripted responses in order."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.client_disconnected = threading.Event()
        self.completed_streams = 0
        self._stream_completed = threading.Condition()
        self._responses: deque[ScriptedResponse] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.llm = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        """The port the server bound."""
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        """http://127.0.0.1:PORT, without a path."""
        return f"http://127.0.0.1:{self.port}"

    def script(self, *responses: ScriptedResponse) -> None:
        """Queues responses for the next requests, in order."""
        with self._lock:
            self._responses.extend(responses)

    def start(self) -> None:
        """Starts serving in a background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stops serving, interrupts slow streams and waits for every handler to finish."""
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    async def wait_for_disconnect(self, seconds: float) -> bool:
        """Whether a client hung up in the middle of a stream within that many seconds."""
        return await asyncio.to_thread(self.client_disconnected.wait, seconds)

    async def wait_for_completed_streams(self, count: int, seconds: float = 10.0) -> int:
        """How many streams the server finished writing, once it reaches count or time runs out.

        The client can read the final chunk before the handler thread records that it
        finished, so a test asks here instead of reading completed_streams at once.
        """

        def wait() -> int:
            with self._stream_completed:
                self._stream_completed.wait_for(lambda: self.completed_streams >= count, seconds)
                return self.completed_streams

        return await asyncio.to_thread(wait)

    def _next_response(self) -> ScriptedResponse:
        with self._lock:
            if self._responses:
                return self._responses.popleft()
        return error(500, {"error": {"message": "no response was scripted"}})

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _wait(self, connection: socket.socket, delay: float) -> bool:
        """Waits up to delay seconds; False when the client hung up or the server is closing."""
        deadline = time.monotonic() + delay
        while True:
            if self._closing.is_set():
                return False
            readable, _, _ = select.select([connection], [], [], 0)
            # The client sends nothing more while it reads a response, so a readable socket
            # that yields no bytes means it closed the connection.
            if readable and not _peek(connection):
                self.client_disconnected.set()
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            time.sleep(min(_POLL_SECONDS, remaining))


def _peek(connection: socket.socket) -> bytes:
    try:
        return connection.recv(1, socket.MSG_PEEK)
    except ConnectionResetError:
        return b""


class _Server(ThreadingHTTPServer):
    # Non-daemon handler threads, so server_close() waits for them and no socket outlives a test.
    daemon_threads = False
    llm: LlmServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keeps test output quiet."""

    def do_POST(self) -> None:
        """Records the request and plays the next scripted response."""
        llm = self.server.llm
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        llm._record(
            RecordedRequest(
                "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
        )
        response = llm._next_response()
        self.close_connection = True
        if response.json_body is not None:
            self._send_json(response)
        else:
            self._send_stream(llm, response)

    def _send_json(self, response: ScriptedResponse) -> None:
        payload = json.dumps(response.json_body).encode()
        self.send_response(response.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("connection", "close")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _send_stream(self, llm: LlmServer, response: ScriptedResponse) -> None:
        self.send_response(response.status)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("connection", "close")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()
        try:
            for event in response.events:
                if not llm._wait(self.connection, event.delay):
                    return
                payload = event.encode()
                self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                self.wfile.flush()
            if response.abort:
                # An RST instead of a FIN, so the client sees a broken connection.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            llm.client_disconnected.set()
            return
        with llm._stream_completed:
            llm.completed_streams += 1
            llm._stream_completed.notify_all()


@contextmanager
def llm_server() -> Iterator[LlmServer]:
    """A started LlmServer, closed on exit."""
    server = LlmServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


# OpenAI chat completions: `data: {chunk}` events ending with `data: [DONE]`.

OPENAI_CHUNK_ID = "chatcmpl-tandem-test"


def openai_provider(server: LlmServer, **config: Any) -> dict[str, Any]:
    """A bundle's provider-openai entry that streams from server (one try, no retries),
    with its key from TANDEM_TEST_SECRET; config adds or replaces keys."""
    return {
        "module": "provider-openai",
        "config": {
            "model": "gpt-test",
            "base_url": f"{server.origin}/v1",
            "api_key": "${TANDEM_TEST_SECRET}",
            "max_retries": 0,
            **config,
        },
    }


def openai_chunk(
    delta: Mapping[str, Any] | None = None,
    *,
    finish_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
    model: str = "gpt-test",
    delay: float = 0.0,
) -> SseEvent:
    """One chat.completion.chunk; with delta None it is the choiceless usage chunk."""
    chunk: dict[str, Any] = {
        "id": OPENAI_CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": model,
        "system_fingerprint": "fp_tandem",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}],
        "usage": None if usage is None else dict(usage),
    }
    return SseEvent(json.dumps(chunk), delay=delay)


def openai_usage(prompt_tokens: int, completion_tokens: int, model: str = "gpt-test") -> SseEvent:
    """The final chunk stream_options.include_usage asks for."""
    return openai_chunk(
        usage={
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        model=model,
    )


def openai_tool_call_start(index: int, call_id: str, name: str) -> SseEvent:
    """The first fragment of a tool call: its id and name, no arguments yet."""
    return openai_chunk(
        {
            "tool_calls": [
                {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        }
    )


def openai_tool_call_arguments(index: int, fragment: str) -> SseEvent:
    """A later fragment of a tool call: a piece of its arguments."""
    return openai_chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})


def openai_done(delay: float = 0.0) -> SseEvent:
    """The end-of-stream sentinel."""
    return SseEvent("[DONE]", delay=delay)


def openai_text_reply(
    pieces: Sequence[str],
    *,
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
    model: str = "gpt-test",
) -> list[SseEvent]:
    """A whole streamed text answer: role chunk, one chunk per piece, stop, usage, [DONE]."""
    return [
        openai_chunk({"role": "assistant", "content": "", "refusal": None}, model=model),
        *(openai_chunk({"content": piece}, model=model) for piece in pieces),
        openai_chunk({}, finish_reason="stop", model=model),
        openai_usage(prompt_tokens, completion_tokens, model=model),
        openai_done(),
    ]


def openai_tool_call_reply(
    call_id: str, name: str, arguments: Mapping[str, Any]
) -> ScriptedResponse:
    """A whole streamed answer that asks for one tool call, its arguments in one fragment."""
    return stream(
        [
            openai_chunk({"role": "assistant", "content": None}),
            openai_tool_call_start(0, call_id, name),
            openai_tool_call_arguments(0, json.dumps(dict(arguments))),
            openai_chunk({}, finish_reason="tool_calls"),
            openai_done(),
        ]
    )


def openai_error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    """An error body as the API sends it with a 4xx/5xx (or inside the stream)."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


# Anthropic messages: `event: <type>` + `data: {json}` for each stream event.


def anthropic_event(payload: Mapping[str, Any], delay: float = 0.0) -> SseEvent:
    """An event whose SSE name is its payload's type, as the API sends them."""
    return SseEvent(json.dumps(payload), event=str(payload["type"]), delay=delay)


def anthropic_message_start(
    input_tokens: int, model: str = "claude-test", *, cache_read_input_tokens: int = 0
) -> SseEvent:
    """message_start with an empty assistant message and the input token count."""
    return anthropic_event(
        {
            "type": "message_start",
            "message": {
                "id": "msg_tandem_test",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": cache_read_input_tokens,
                    "output_tokens": 1,
                },
            },
        }
    )


def anthropic_ping() -> SseEvent:
    """The keep-alive event the API interleaves."""
    return anthropic_event({"type": "ping"})


def anthropic_text_block(index: int, pieces: Sequence[str]) -> list[SseEvent]:
    """A text content block streamed as text_delta pieces."""
    return [
        anthropic_event(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        *(
            anthropic_event(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                }
            )
            for piece in pieces
        ),
        anthropic_event({"type": "content_block_stop", "index": index}),
    ]


def anthropic_thinking_block(index: int, pieces: Sequence[str]) -> list[SseEvent]:
    """A thinking content block: thinking_delta pieces, then its signature."""
    return [
        anthropic_event(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            }
        ),
        *(
            anthropic_event(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "thinking_delta", "thinking": piece},
                }
            )
            for piece in pieces
        ),
        anthropic_event(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"},
            }
        ),
        anthropic_event({"type": "content_block_stop", "index": index}),
    ]


def anthropic_tool_use_block(
    index: int, tool_use_id: str, name: str, fragments: Sequence[str]
) -> list[SseEvent]:
    """A tool_use content block whose input arrives as input_json_delta fragments."""
    return [
        anthropic_event(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": tool_use_id, "name": name, "input": {}},
            }
        ),
        *(
            anthropic_event(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": fragment},
                }
            )
            for fragment in fragments
        ),
        anthropic_event({"type": "content_block_stop", "index": index}),
    ]


def anthropic_message_end(stop_reason: str, output_tokens: int) -> list[SseEvent]:
    """message_delta with the stop reason and output tokens, then message_stop."""
    return [
        anthropic_event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            }
        ),
        anthropic_event({"type": "message_stop"}),
    ]


def anthropic_error_body(message: str, error_type: str) -> dict[str, Any]:
    """An error body as the API sends it with an HTTP error or as an `error` event."""
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": "req_tandem_test",
    }
