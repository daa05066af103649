"""tool-web inside a real turn: the operator's TANDEM_TOOLS_WEB_PRIVATE_ALLOW reaches the tool,
a fetched page reaches the tool result event, and a refused address comes back as a tool
error the model sees rather than a failed turn."""

from __future__ import annotations

from typing import Any

from tests.support.modules import installed_with
from tests.support.pair import running_pair
from tests.support.turns import active_session, bundle, collect, kinds, send
from tests.support.web_server import Page, web_server

MODULES = installed_with({"tool": {"tool-web": "session_service.modules.web:WebTool"}})
METADATA = "http://169.254.169.254/latest/meta-data/"
PAGE = b"<html><body><h1>Harbour notice</h1><script>hidden()</script><p>Berth 4 is free.</p>"


async def test_web_fetch_results_and_refusals_reach_the_turn(database_url: str) -> None:
    with web_server({"/notice": Page(PAGE)}) as server:
        calls = [
            {"name": "web_fetch", "arguments": {"url": server.url("/notice")}},
            {"name": "web_fetch", "arguments": {"url": METADATA}},
        ]
        script: list[dict[str, Any]] = [{"tool_calls": calls}, {"reply": "Berth 4 is free."}]
        document = bundle({"script": script}, tools=[{"module": "tool-web", "config": {}}])
        async with running_pair(
            database_url,
            modules=MODULES,
            config={"watch_poll_seconds": 0.5},
            session={"tools_web_private_allow": "127.0.0.1"},
        ) as stack:
            session_id = await active_session(stack, document)
            events = await collect(send(stack.sessions, session_id, "is a berth free?"))
        assert len(server.seen()) == 1
    assert kinds(events)[-1] == "turn_completed"
    started = {
        e.tool_call_started.tool_call_id: e.tool_call_started.arguments_json
        for e in events
        if e.HasField("tool_call_started")
    }
    results = {
        METADATA in started[e.tool_call_completed.tool_call_id]: e.tool_call_completed
        for e in events
        if e.HasField("tool_call_completed")
    }
    page, metadata = results[False], results[True]
    assert page.is_error is False, page.result
    assert page.result.endswith("\n\nHarbour notice\nBerth 4 is free.")
    assert f"url: {server.url('/notice')}" in page.result
    assert metadata.is_error is True
    assert metadata.result == (
        f"Could not fetch {METADATA}: refused: 169.254.169.254 is a link-local address;"
        " the operator has not allowed it"
    )
