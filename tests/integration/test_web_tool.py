"""tool-web against local servers: what web_fetch refuses, before any connection, and what it
returns for pages the operator lets it reach; web_search against a local JSON backend.

Every socket connect in the process is observed (not changed), so a refusal is shown to
happen before anything is sent: no connect to the refused address, and the local server at
a refused URL sees no request.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from session_service.modules.web import WebTool, html_to_text
from session_service.tool_policy import ToolPolicy, WebPolicy
from session_service.turns.protocols import ToolResult
from session_service.workspace import Sandbox
from tests.support.certs import Authority
from tests.support.web_server import Page, WebServer, redirect, web_server

PAGE = b"""<!doctype html>
<html><head><title>Tide tables</title>
<style>body { color: red }</style>
<script>document.write("never shown")</script></head>
<body>
  <h1>High   water</h1>
  <p>Today at <b>14:02</b>,
     see <a href="/tomorrow">tomorrow's table</a>.</p>
  <noscript>enable scripts</noscript>
</body></html>"""


def sandbox(tmp_path: Path, **web: Any) -> Sandbox:
    """A sandbox whose operator web policy is web."""
    return Sandbox(tmp_path, (), ToolPolicy(web=WebPolicy(**web)))


def allowing(tmp_path: Path, *entries: str, **web: Any) -> WebTool:
    """web_fetch with the operator's private_allow set to entries."""
    return WebTool({}, sandbox(tmp_path, private_allow=entries, **web))


async def fetch(tool: WebTool, url: str, **arguments: Any) -> ToolResult:
    return await tool.call("web_fetch", {"url": url, **arguments})


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address a socket in this process connects to while the test runs."""
    seen: list[Any] = []
    original = socket.socket.connect

    def observed(self: socket.socket, address: Any) -> None:
        seen.append(address)
        original(self, address)

    monkeypatch.setattr(socket.socket, "connect", observed)
    return seen


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host name resolved in this process while the test runs."""
    seen: list[str] = []
    original = socket.getaddrinfo

    def observed(host: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(host))
        return original(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", observed)
    return seen


@pytest.fixture
def server() -> Iterator[WebServer]:
    with web_server({"/": Page(PAGE)}) as running:
        yield running


def hosts(addresses: list[Any]) -> set[str]:
    return {address[0] for address in addresses if isinstance(address, tuple)}


# --- allowed fetches ------------------------------------------------------------------------


async def test_an_allowed_page_comes_back_as_readable_text(
    tmp_path: Path, server: WebServer, connects: list[Any]
) -> None:
    result = await fetch(allowing(tmp_path, "127.0.0.1"), server.url("/"))
    assert result.is_error is False, result.content
    head, _, text = result.content.partition("\n\n")
    assert text == "Tide tables\nHigh water\nToday at 14:02, see tomorrow's table."
    assert f"url: {server.url('/')}" in head
    assert "status_code: 200" in head
    assert "truncated: false" in head
    assert f"total_bytes: {len(PAGE)}" in head
    [seen] = server.seen()
    assert seen.headers["Host"] == f"127.0.0.1:{server.port}"
    # The observer sees real connects, so its silence in the refusal tests means something.
    assert ("127.0.0.1", server.port) in connects


async def test_a_name_is_resolved_once_and_the_checked_address_is_what_is_connected_to(
    tmp_path: Path, server: WebServer, connects: list[Any], resolved: list[str]
) -> None:
    tool = allowing(tmp_path, f"localhost:{server.port}")
    result = await fetch(tool, f"http://localhost:{server.port}/")
    assert result.is_error is False, result.content
    assert "High water" in result.content
    # No second lookup at connect time could answer differently from the checked one.
    assert resolved.count("localhost") == 1
    assert ("127.0.0.1", server.port) in connects
    [seen] = server.seen()
    assert seen.headers["Host"] == f"localhost:{server.port}"


@pytest.mark.parametrize(
    ("entry", "host"),
    [
        ("127.0.0.0/8", "127.0.0.1"),
        ("127.0.0.1:{port}", "127.0.0.1"),
        ("localhost", "localhost"),
        ("LOCALHOST:{port}", "localhost."),
        ("::ffff:127.0.0.1", "127.0.0.1"),
    ],
)
async def test_each_form_of_operator_allowance_admits_its_destination(
    tmp_path: Path, server: WebServer, entry: str, host: str
) -> None:
    tool = allowing(tmp_path, entry.format(port=server.port))
    result = await fetch(tool, f"http://{host}:{server.port}/")
    assert result.is_error is False, result.content
    assert len(server.seen()) == 1


async def test_json_and_plain_text_come_back_as_they_are(tmp_path: Path) -> None:
    document = json.dumps({"tide": "high", "at": "14:02"}).encode()
    pages = {
        "/tide.json": Page(document, "application/json"),
        "/notes.txt": Page(b"  line one\n\n  <b>not html</b>", "text/plain; charset=utf-8"),
    }
    with web_server(pages) as running:
        tool = allowing(tmp_path, "127.0.0.1")
        as_json = await fetch(tool, running.url("/tide.json"))
        as_text = await fetch(tool, running.url("/notes.txt"))
    assert as_json.content.partition("\n\n")[2] == document.decode()
    assert as_text.content.partition("\n\n")[2] == "  line one\n\n  <b>not html</b>"


async def test_a_body_over_max_bytes_is_cut_there_and_says_so(tmp_path: Path) -> None:
    body = b"".join(b"line %04d\n" % n for n in range(1000))
    with web_server({"/big.txt": Page(body, "text/plain")}) as running:
        tool = allowing(tmp_path, "127.0.0.1", max_bytes=1000)
        result = await fetch(tool, running.url("/big.txt"))
    assert result.is_error is False
    head, _, text = result.content.partition("\n\n")
    assert "truncated: true" in head
    assert f"total_bytes: {len(body)}" in head
    assert text.startswith(body[:1000].decode())
    assert "line 0100" not in text
    assert "this server reads at most 1000 bytes" in text


async def test_a_bundle_can_lower_max_bytes_but_not_raise_it(tmp_path: Path) -> None:
    body = b"x" * 5000
    policy = sandbox(tmp_path, private_allow=("127.0.0.1",), max_bytes=2000)
    with web_server({"/x": Page(body, "text/plain")}) as running:
        lower = await fetch(WebTool({"max_bytes": 100}, policy), running.url("/x"))
        higher = await fetch(WebTool({"max_bytes": 10_000_000}, policy), running.url("/x"))
    assert "returned_bytes: 100" in lower.content
    assert "returned_bytes: 2000" in higher.content
    assert "truncated: true" in higher.content


async def test_offset_and_limit_page_through_a_body(tmp_path: Path) -> None:
    body = b"0123456789" * 10
    with web_server({"/digits": Page(body, "text/plain")}) as running:
        tool = allowing(tmp_path, "127.0.0.1")
        middle = await fetch(tool, running.url("/digits"), offset=25, limit=10)
        tail = await fetch(tool, running.url("/digits"), offset=95, limit=10)
    head, _, text = middle.content.partition("\n\n")
    assert text.startswith("5678901234\n\n[Content truncated at 35 bytes. Total: 100 bytes.")
    assert "truncated: true" in head
    assert tail.content.partition("\n\n")[2] == "56789"
    assert "truncated: false" in tail.content


async def test_binary_content_is_refused_inline_and_saved_intact(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    with web_server({"/logo.png": Page(png, "image/png")}) as running:
        tool = allowing(tmp_path, "127.0.0.1")
        inline = await fetch(tool, running.url("/logo.png"))
        saved = await fetch(tool, running.url("/logo.png"), save_to_file="logo.png")
    assert inline.is_error is True
    assert "binary content" in inline.content
    assert "image/png" in inline.content
    assert saved.is_error is False, saved.content
    assert f"saved_bytes: {len(png)}" in saved.content
    assert (tmp_path / "logo.png").read_bytes() == png


async def test_save_to_file_writes_the_text_and_stays_in_the_workspace(
    tmp_path: Path, server: WebServer
) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    tool = WebTool({}, Sandbox(workspace, (), ToolPolicy(web=WebPolicy(("127.0.0.1",)))))
    saved = await fetch(tool, server.url("/"), save_to_file="tides.txt")
    assert saved.is_error is False, saved.content
    assert (workspace / "tides.txt").read_text() == html_to_text(PAGE.decode())
    (workspace / "out").symlink_to(tmp_path)
    for escape in ("../escaped.txt", str(tmp_path / "escaped.txt"), "out/escaped.txt"):
        refused = await fetch(tool, server.url("/"), save_to_file=escape)
        assert refused.is_error is True
        assert "outside the session's workspace" in refused.content
    assert not (tmp_path / "escaped.txt").exists()
    # The path is checked before anything is fetched.
    assert len(server.seen()) == 1


async def test_a_redirect_within_allowed_places_is_followed(tmp_path: Path) -> None:
    with web_server({"/old": redirect("/"), "/": Page(PAGE)}) as running:
        result = await fetch(allowing(tmp_path, "127.0.0.1"), running.url("/old"))
    assert result.is_error is False, result.content
    assert f"url: {running.url('/')}" in result.content
    assert "High water" in result.content


async def test_too_many_redirects_end_the_fetch(tmp_path: Path) -> None:
    with web_server({"/loop": redirect("/loop")}) as running:
        tool = allowing(tmp_path, "127.0.0.1", max_redirects=3)
        result = await fetch(tool, running.url("/loop"))
        assert len(running.seen()) == 4
    assert result.is_error is True
    assert "more than 3 redirects" in result.content


async def test_an_http_error_is_a_tool_error(tmp_path: Path, server: WebServer) -> None:
    result = await fetch(allowing(tmp_path, "127.0.0.1"), server.url("/missing"))
    assert result.is_error is True
    assert result.content == f"Could not fetch {server.url('/missing')}: HTTP 404 Not Found"


async def test_a_server_too_slow_for_the_bundle_timeout_is_a_tool_error(tmp_path: Path) -> None:
    with web_server({"/slow": Page(b"late", "text/plain", delay=1.0)}) as running:
        policy = sandbox(tmp_path, private_allow=("127.0.0.1",), search_url=running.url("/slow"))
        tool = WebTool({"timeout": 0.2}, policy)
        fetched = await fetch(tool, running.url("/slow"))
        searched = await tool.call("web_search", {"query": "tides"})
    assert fetched.content == f"Could not fetch {running.url('/slow')}: timed out after 0.2 seconds"
    assert searched.content == "web_search failed: timed out after 0.2 seconds"
    assert fetched.is_error is searched.is_error is True


# --- refusals -------------------------------------------------------------------------------


async def test_loopback_is_refused_before_the_server_is_asked(
    tmp_path: Path, server: WebServer, connects: list[Any]
) -> None:
    result = await fetch(WebTool({}, sandbox(tmp_path)), server.url("/"))
    assert result.is_error is True
    assert result.content == (
        f"Could not fetch {server.url('/')}: refused: 127.0.0.1 is a loopback address;"
        " the operator has not allowed it"
    )
    assert server.seen() == []
    assert ("127.0.0.1", server.port) not in connects


async def test_an_allowance_for_another_port_does_not_admit_this_one(
    tmp_path: Path, server: WebServer
) -> None:
    result = await fetch(allowing(tmp_path, f"127.0.0.1:{server.port + 1}"), server.url("/"))
    assert result.is_error is True
    assert server.seen() == []


@pytest.mark.parametrize(
    ("url", "address", "why"),
    [
        ("http://10.0.0.1/", "10.0.0.1", "a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "a link-local address"),
        ("http://100.64.0.1/", "100.64.0.1", "a shared (carrier-grade NAT) address"),
        ("http://0.0.0.0/", "0.0.0.0", "an unspecified address"),
        ("http://[::1]:9/", "::1", "a loopback address"),
        ("http://[::ffff:10.0.0.1]/", "::ffff:10.0.0.1", "a private address"),
        ("http://[fe80::1]/", "fe80::1", "a link-local address"),
        ("http://[fd00::1]/", "fd00::1", "a private address"),
        ("http://224.0.0.1/", "224.0.0.1", "a multicast address"),
    ],
)
async def test_non_public_addresses_are_refused_without_a_connect(
    tmp_path: Path, connects: list[Any], url: str, address: str, why: str
) -> None:
    # 127.0.0.1 is allowed, so nothing about the rule for one address leaks to another.
    result = await fetch(allowing(tmp_path, "127.0.0.1"), url)
    assert result.is_error is True
    assert result.content == (
        f"Could not fetch {url}: refused: {address} is {why}; the operator has not allowed it"
    )
    assert connects == []


async def test_a_name_that_resolves_to_loopback_is_refused(
    tmp_path: Path, server: WebServer, connects: list[Any]
) -> None:
    url = f"http://localhost:{server.port}/"
    result = await fetch(WebTool({}, sandbox(tmp_path)), url)
    assert result.is_error is True
    assert result.content == (
        f"Could not fetch {url}: refused: localhost resolves to a loopback address;"
        " the operator has not allowed it"
    )
    assert server.seen() == []
    assert connects == []


async def test_numeric_spellings_of_loopback_are_resolved_and_refused(
    tmp_path: Path, server: WebServer, connects: list[Any]
) -> None:
    for host in ("2130706433", "127.1", "0x7f.0.0.1"):
        url = f"http://{host}:{server.port}/"
        result = await fetch(WebTool({}, sandbox(tmp_path)), url)
        assert result.is_error is True, url
        assert "a loopback address" in result.content
    assert server.seen() == []
    assert connects == []


async def test_a_redirect_to_loopback_is_refused_and_its_target_never_asked(
    tmp_path: Path, connects: list[Any]
) -> None:
    with web_server({"/": Page(b"secret admin page", "text/plain")}) as target:
        pages = {"/go": redirect(target.url("/"))}
        with web_server(pages) as allowed:
            tool = allowing(tmp_path, f"127.0.0.1:{allowed.port}")
            result = await fetch(tool, allowed.url("/go"))
            assert len(allowed.seen()) == 1
        assert target.seen() == []
    assert result.is_error is True
    assert result.content == (
        f"Could not fetch {allowed.url('/go')}: redirected to {target.url('/')}; refused:"
        " 127.0.0.1 is a loopback address; the operator has not allowed it"
    )
    assert ("127.0.0.1", target.port) not in connects


async def test_a_redirect_to_metadata_is_refused_without_a_connect(
    tmp_path: Path, connects: list[Any]
) -> None:
    pages = {"/go": redirect("http://169.254.169.254/latest/meta-data/", 307)}
    with web_server(pages) as allowed:
        result = await fetch(allowing(tmp_path, "127.0.0.1"), allowed.url("/go"))
    assert result.is_error is True
    assert "169.254.169.254 is a link-local address" in result.content
    assert "169.254.169.254" not in hosts(connects)


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.com/file", "gopher://example.com/", "example.com"],
)
async def test_only_http_and_https_are_fetched(
    tmp_path: Path, connects: list[Any], url: str
) -> None:
    result = await fetch(allowing(tmp_path, "127.0.0.1"), url)
    assert result.is_error is True
    assert "refused: only http and https URLs can be fetched" in result.content
    assert "root:" not in result.content
    assert connects == []


async def test_bundle_domain_lists_only_narrow(tmp_path: Path, server: WebServer) -> None:
    policy = sandbox(tmp_path)
    # Allowing a domain in the bundle does not admit a local address the operator has not.
    local = f"http://localhost:{server.port}/"
    widened = await fetch(WebTool({"allowed_domains": ["localhost"]}, policy), local)
    assert "the operator has not allowed it" in widened.content
    admitted = sandbox(tmp_path, private_allow=("127.0.0.1",))
    narrowed = await fetch(WebTool({"allowed_domains": ["example.org"]}, admitted), server.url())
    blocked = await fetch(WebTool({"blocked_domains": ["127.0.0.1"]}, admitted), server.url())
    assert "not among this bundle's allowed_domains" in narrowed.content
    assert "among this bundle's blocked_domains" in blocked.content
    assert server.seen() == []


# --- https ----------------------------------------------------------------------------------


class _TlsServer:
    """A TLS server on 127.0.0.1 that answers one page and records the SNI names sent."""

    def __init__(self, directory: Path) -> None:
        authority = Authority(directory, "web-test")
        issued = authority.issue("localhost", server=True)
        self.ca_file = authority.ca_file
        self.names: list[str | None] = []
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(issued.cert, issued.key)
        self._context.sni_callback = self._sni
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _sni(self, _socket: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: Any) -> None:
        self.names.append(name)

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with connection:
                try:
                    with self._context.wrap_socket(connection, server_side=True) as tls:
                        tls.recv(65536)
                        body = b"<p>over TLS</p>"
                        tls.sendall(
                            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close"
                            + b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                        )
                except (ssl.SSLError, OSError):
                    continue

    def close(self) -> None:
        # shutdown wakes the accept() blocked in the serving thread; close alone does not.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[_TlsServer]:
    running = _TlsServer(tmp_path)
    try:
        yield running
    finally:
        running.close()


async def test_https_sends_the_name_for_sni_and_checks_the_certificate_against_it(
    tmp_path: Path,
    tls_server: _TlsServer,
    connects: list[Any],
    resolved: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"https://localhost:{tls_server.port}/"
    tool = allowing(tmp_path, "localhost")
    untrusted = await fetch(tool, url)
    assert untrusted.is_error is True
    assert "TLS certificate was not accepted" in untrusted.content
    # Once the operator trusts the CA, the same fetch works: the certificate (issued to
    # localhost) matched the name although the connection went to the checked address.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca_file))
    trusted = await fetch(allowing(tmp_path, "localhost"), url)
    assert trusted.is_error is False, trusted.content
    assert trusted.content.endswith("\n\nover TLS")
    assert tls_server.names == ["localhost", "localhost"]
    assert resolved.count("localhost") == 2
    assert ("127.0.0.1", tls_server.port) in connects


# --- web_search -----------------------------------------------------------------------------


async def test_web_search_asks_the_operator_backend_and_lists_its_results(
    tmp_path: Path,
) -> None:
    answer = {
        "results": [
            {"title": "Tide tables", "url": "https://tides.example/", "snippet": "High water."},
            {"title": "Moon", "url": "https://moon.example/", "snippet": ""},
        ]
    }
    with web_server({"/search": Page(json.dumps(answer).encode(), "application/json")}) as s:
        # The backend is on loopback and private_allow is empty: the operator's URL is exempt.
        tool = WebTool({"max_results": 3}, sandbox(tmp_path, search_url=s.url("/search")))
        result = await tool.call("web_search", {"query": "high tide"})
        [seen] = s.seen()
    assert result.is_error is False, result.content
    assert result.content == (
        "Results for 'high tide':\n\n"
        "1. Tide tables\n   https://tides.example/\n   High water.\n\n"
        "2. Moon\n   https://moon.example/"
    )
    assert seen.query == {"q": ["high tide"], "count": ["3"]}


async def test_web_search_without_a_backend_says_it_is_not_configured(tmp_path: Path) -> None:
    result = await WebTool({}, sandbox(tmp_path)).call("web_search", {"query": "tides"})
    assert result.is_error is True
    assert "web search is not configured on this server" in result.content
    assert "TANDEM_TOOLS_WEB_SEARCH_URL" in result.content


async def test_a_malformed_search_answer_is_a_tool_error_that_hides_the_backend_url(
    tmp_path: Path,
) -> None:
    with web_server({"/search": Page(b"<html>nope</html>", "text/html")}) as s:
        url = s.url("/search?key=operator-secret")
        result = await WebTool({}, sandbox(tmp_path, search_url=url)).call(
            "web_search", {"query": "tides"}
        )
    assert result.is_error is True
    assert 'not {"results"' in result.content
    assert "operator-secret" not in result.content


# --- config ---------------------------------------------------------------------------------


def test_the_tools_keep_amplifier_names_and_parameters(tmp_path: Path) -> None:
    specs = {spec.name: spec for spec in WebTool({}, sandbox(tmp_path)).specs()}
    assert set(specs) == {"web_fetch", "web_search"}
    assert specs["web_search"].description == "Search the web for information"
    assert specs["web_search"].parameters["required"] == ["query"]
    assert set(specs["web_fetch"].parameters["properties"]) == {
        "url",
        "save_to_file",
        "offset",
        "limit",
    }
    assert specs["web_fetch"].description.startswith("Fetch content from a web URL.")


def test_bad_settings_are_reported_by_key(tmp_path: Path) -> None:
    config = {"timeout": -1, "max_bytes": "big", "max_results": 500, "allowed_domains": "x"}
    problems = dict(WebTool.check_config(config, sandbox(tmp_path)))
    assert set(problems) == {"timeout", "max_bytes", "max_results", "allowed_domains"}
    assert WebTool.check_config({"timeout": 5, "max_results": 10}, sandbox(tmp_path)) == []
    with pytest.raises(ValueError, match="must be a positive number"):
        WebTool(config, sandbox(tmp_path))
