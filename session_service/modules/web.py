"""Fetches web pages and searches the web, without letting a tenant reach the operator's network.

The tools keep Amplifier's names, descriptions and parameters (web_fetch: url, save_to_file,
offset, limit; web_search: query). What they may do comes from the operator's
`sandbox.policy.web` (TANDEM_TOOLS_WEB_*); a bundle's config keys (see CONFIG_KEYS) can only
narrow it:

- `timeout`: seconds a whole call may take, redirects and body included; lowered to the
  operator's limit if higher.
- `search_timeout`: the same for web_search only, if it should be shorter still.
- `max_bytes`: the most bytes of a response read; lowered to the operator's limit if higher.
- `default_limit`: bytes web_fetch returns when the call gives no `limit` (default 200 KiB).
- `max_results`: search results asked for and shown, 1 to 50 (default 5).
- `extract_text`: turn HTML into readable text (default true).
- `allowed_domains`: if given, the only hosts (and their subdomains) web_fetch may fetch.
- `blocked_domains`: hosts (and their subdomains) web_fetch never fetches. Unlike
  Amplifier's module there is no default list: the address check below covers local hosts.

web_fetch takes http and https URLs only. Before any connection it resolves the host and
refuses if any address it resolves to is loopback, private, link-local, shared, multicast,
reserved or otherwise not public, unless the operator's `private_allow` admits it. It then
connects to the very address it checked, not to the name again, so DNS cannot change the
answer between check and connect; every redirect is checked the same way.

web_search asks the operator's backend (`search_url`, TANDEM_TOOLS_WEB_SEARCH_URL) with
`GET <search_url>?q=<query>&count=<max_results>`, which must answer 200 with JSON of the form
`{"results": [{"title": "...", "url": "...", "snippet": "..."}]}`. The backend is the
operator's choice, so it is not subject to the address check.
"""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import json
import math
import os
import re
import socket
import ssl
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, cast

import httpx2

from session_service.turns.protocols import ToolResult, ToolSpec
from session_service.workspace import Sandbox

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_LIMIT = 200 * 1024
DEFAULT_MAX_RESULTS = 5
MAX_RESULTS = 50
MAX_QUERY_LENGTH = 4096
PREVIEW_CHARS = 1000
USER_AGENT = "Tandem-tool-web/1"

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_PORT = re.compile(r"[0-9]{1,5}")
_SPACE = re.compile(r"\s+")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/ecmascript",
        "application/x-ndjson",
        "application/x-yaml",
        "application/yaml",
    }
)
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})

WEB_FETCH_DESCRIPTION = """Fetch content from a web URL.

Content is limited to 200KB by default; for more, set save_to_file to write the full content to a file (returns metadata + preview), or paginate with offset/limit.

The response includes `truncated` (was content cut off) and `total_bytes` (original size, when available) - use them to decide whether to re-fetch with save_to_file.

Binary content (PDFs, images, archives) cannot be returned inline as text and will be refused; use save_to_file to download it intact - the bytes are written to disk exactly as received."""  # noqa: E501

WEB_SEARCH_DESCRIPTION = "Search the web for information"


class _Refused(Exception):
    """A call that ends in an error result; the message is safe to show the model."""


# --- where web_fetch may connect ------------------------------------------------------------


def _why_not_public(address: IPAddress) -> str | None:
    """Why address is off limits unless the operator allows it; None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address reach that address: judge it instead.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            why = _why_not_public(embedded)
            if why is not None or address.ipv4_mapped is not None:
                return why
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if not address.is_global:
        return "not a public address"
    return None


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it is; others unchanged."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class _Allowance:
    """One entry of the operator's private_allow: a host name or a network, maybe one port."""

    host: str = ""
    network: IPNetwork | None = None
    port: int | None = None

    def admits(self, host: str, address: IPAddress, port: int) -> bool:
        """Whether a connection to address:port, for the URL host `host`, is allowed."""
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address.version == self.network.version and address in self.network
        return host == self.host


def _plain_network(network: IPNetwork) -> IPNetwork:
    """An IPv4-mapped IPv6 network as the IPv4 network it is (addresses are compared so)."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((int(mapped), network.prefixlen - 96))
    return network


def _allowance(entry: str) -> _Allowance | None:
    """An operator entry (`host`, `host:port`, an IP, `[v6]:port`, a CIDR network) parsed;
    None for one that cannot be understood, which then admits nothing."""
    text = entry.strip().lower()
    if not text:
        return None
    try:
        return _Allowance(network=_plain_network(ipaddress.ip_network(text, strict=False)))
    except ValueError:
        pass
    host, port = text, ""
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    elif ":" in text:
        return None
    if port and (not _PORT.fullmatch(port) or int(port) > 65535):
        return None
    number = int(port) if port else None
    host = host.rstrip(".")
    if not host:
        return None
    try:
        return _Allowance(network=_plain_network(ipaddress.ip_network(host)), port=number)
    except ValueError:
        return _Allowance(host=host, port=number)


def _domain_matches(host: str, domains: Sequence[str]) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in domains)


@dataclass(frozen=True)
class _Destination:
    """A checked URL, and how to request it from the address that was checked."""

    url: httpx2.URL
    # The URL with its host replaced by each checked address, in the resolver's order.
    pinned: tuple[httpx2.URL, ...]
    headers: Mapping[str, str]
    extensions: Mapping[str, Any] = field(default_factory=dict)


# --- turning responses into text ------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "caption", "dd", "details", "div",
        "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3",
        "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
        "summary", "table", "td", "th", "title", "tr", "ul",
    }
)  # fmt: skip
_HIDDEN_TAGS = frozenset({"script", "style", "noscript", "template", "svg"})


class _TextExtractor(HTMLParser):
    """Collects the readable text of an HTML document (link text included, code dropped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._hidden = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden += 1
        elif tag in _BLOCK_TAGS:
            self._parts.append("\n")
            self._pre += tag == "pre"

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCK_TAGS:
            self._parts.append("\n")
            self._pre = max(0, self._pre - (tag == "pre"))

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        # Line breaks in the source are only spaces, except in preformatted text.
        self._parts.append(data if self._pre else _SPACE.sub(" ", data))

    def text(self) -> str:
        """The text, whitespace collapsed within lines and blank lines dropped."""
        lines = (" ".join(line.split()) for line in "".join(self._parts).splitlines())
        return "\n".join(line for line in lines if line)


def html_to_text(html: str) -> str:
    """The readable text of an HTML document: no scripts or styles, whitespace collapsed."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _textual(media_type: str) -> bool:
    return (
        not media_type
        or media_type.startswith("text/")
        or media_type in _TEXT_TYPES
        or media_type.endswith(("+json", "+xml"))
        or media_type in _HTML_TYPES
    )


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        encoding = codecs.lookup(charset or "utf-8").name
    except LookupError:
        encoding = "utf-8"
    return raw.decode(encoding, errors="replace")


async def _read_capped(response: httpx2.Response, cap: int) -> tuple[bytes, bool]:
    """Up to cap bytes of the body, and whether there was more (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        room = cap - size
        if len(chunk) > room:
            chunks.append(chunk[:room])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


# --- config ---------------------------------------------------------------------------------


def _positive_number(config: Mapping[str, Any], key: str) -> float | None:
    value = config.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{key} must be a positive number")
    return float(value)


def _positive_integer(config: Mapping[str, Any], key: str, most: int | None = None) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be a positive integer")
    if most is not None and value > most:
        raise ValueError(f"{key} must be at most {most}")
    return value


def _domains(config: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = config.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a list of host names")
    domains: list[str] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, str) or not entry.strip(". "):
            raise ValueError(f"{key}[{index}] must be a non-empty host name")
        domains.append(entry.strip().lower().rstrip("."))
    return tuple(domains)


def _flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    return value


@dataclass(frozen=True)
class _Settings:
    timeout: float
    search_timeout: float
    max_bytes: int
    default_limit: int
    max_results: int
    extract_text: bool
    allowed_domains: tuple[str, ...]
    blocked_domains: tuple[str, ...]


def _settings(config: Mapping[str, Any], sandbox: Sandbox) -> _Settings:
    """The bundle's settings under the operator's: each cap is the lower of the two."""
    policy = sandbox.policy.web
    timeout = _positive_number(config, "timeout")
    max_bytes = _positive_integer(config, "max_bytes")
    limit = min(timeout or policy.timeout_seconds, policy.timeout_seconds)
    return _Settings(
        timeout=limit,
        search_timeout=min(_positive_number(config, "search_timeout") or limit, limit),
        max_bytes=min(max_bytes or policy.max_bytes, policy.max_bytes),
        default_limit=_positive_integer(config, "default_limit") or DEFAULT_LIMIT,
        max_results=_positive_integer(config, "max_results", MAX_RESULTS) or DEFAULT_MAX_RESULTS,
        extract_text=_flag(config, "extract_text", True),
        allowed_domains=_domains(config, "allowed_domains"),
        blocked_domains=_domains(config, "blocked_domains"),
    )


_CHECKS: dict[str, Callable[[Mapping[str, Any]], object]] = {
    "timeout": lambda c: _positive_number(c, "timeout"),
    "search_timeout": lambda c: _positive_number(c, "search_timeout"),
    "max_bytes": lambda c: _positive_integer(c, "max_bytes"),
    "default_limit": lambda c: _positive_integer(c, "default_limit"),
    "max_results": lambda c: _positive_integer(c, "max_results", MAX_RESULTS),
    "extract_text": lambda c: _flag(c, "extract_text", True),
    "allowed_domains": lambda c: _domains(c, "allowed_domains"),
    "blocked_domains": lambda c: _domains(c, "blocked_domains"),
}


# --- the tools ------------------------------------------------------------------------------


class WebTool:
    """web_fetch and web_search, inside the operator's web policy."""

    CONFIG_KEYS: frozenset[str] = frozenset(_CHECKS)
    # Its config problems are bad values, not paths reaching too far.
    REACH_VIOLATION = "TOOL_CONFIG_INVALID"

    def __init__(self, config: Mapping[str, Any], sandbox: Sandbox) -> None:
        self._settings = _settings(config, sandbox)
        policy = sandbox.policy.web
        self._allow = tuple(a for a in map(_allowance, policy.private_allow) if a is not None)
        self._search_url = policy.search_url.strip()
        self._max_redirects = max(0, policy.max_redirects)
        self._workspace = sandbox.workspace.resolve(strict=False)
        self._tls: ssl.SSLContext | None = None

    @staticmethod
    def check_config(config: Mapping[str, Any], sandbox: Sandbox) -> list[tuple[str, str]]:
        """Problems with a bundle's settings for this module, as (config key, message) pairs."""
        problems: list[tuple[str, str]] = []
        for key, check in _CHECKS.items():
            try:
                check(config)
            except ValueError as exc:
                problems.append((key, str(exc)))
        return problems

    def specs(self) -> Sequence[ToolSpec]:
        """The web_search and web_fetch tools, as Amplifier's module describes them."""
        return (
            ToolSpec(
                "web_search",
                WEB_SEARCH_DESCRIPTION,
                {
                    "type": "object",
                    "properties": {
                        "query": {
                            "type": "string",
                            "description": "Search query to execute",
                            "minLength": 1,
                            "maxLength": MAX_QUERY_LENGTH,
                        }
                    },
                    "required": ["query"],
                },
            ),
            ToolSpec(
                "web_fetch",
                WEB_FETCH_DESCRIPTION,
                {
                    "type": "object",
                    "properties": {
                        "url": {"type": "string", "description": "URL to fetch content from"},
                        "save_to_file": {
                            "type": "string",
                            "description": "Save full content to this file path instead of"
                            " returning in response. Useful for large pages. Returns metadata +"
                            " preview when set.",
                        },
                        "offset": {
                            "type": "integer",
                            "description": "Start reading from byte N (default 0). Use for"
                            " pagination.",
                            "default": 0,
                        },
                        "limit": {
                            "type": "integer",
                            "description": "Max bytes to return (default 200KB). Use for"
                            " pagination.",
                            "default": DEFAULT_LIMIT,
                        },
                    },
                    "required": ["url"],
                },
            ),
        )

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Runs one tool; every failure is returned as an error result, never raised."""
        # The model's arguments are only as typed as its JSON was.
        if not isinstance(cast(object, arguments), Mapping):
            return ToolResult("The arguments must be a JSON object.", is_error=True)
        if name == "web_fetch":
            given = arguments.get("url")
            if not isinstance(given, str) or not given.strip():
                return ToolResult("web_fetch needs a non-empty 'url' string.", is_error=True)
            # The model's own URL, shortened: a huge one would crowd out the reason.
            url = given if len(given) <= 500 else given[:500] + "..."
            try:
                return ToolResult(
                    await self._within_time(
                        self._fetch(given.strip(), arguments), self._settings.timeout
                    )
                )
            except _Refused as exc:
                return ToolResult(f"Could not fetch {url}: {exc}", is_error=True)
            except Exception as exc:
                return ToolResult(f"Could not fetch {url}: {type(exc).__name__}.", is_error=True)
        if name == "web_search":
            try:
                return ToolResult(
                    await self._within_time(self._search(arguments), self._settings.search_timeout)
                )
            except _Refused as exc:
                return ToolResult(f"web_search failed: {exc}", is_error=True)
            except Exception as exc:
                return ToolResult(f"web_search failed: {type(exc).__name__}.", is_error=True)
        return ToolResult(
            f"Unknown tool {name!r}; this module offers web_search and web_fetch.", is_error=True
        )

    async def _within_time(self, work: Coroutine[Any, Any, str], seconds: float) -> str:
        # One deadline covers resolving, every redirect and reading the body.
        try:
            async with asyncio.timeout(seconds):
                return await work
        except (TimeoutError, httpx2.TimeoutException):
            raise _Refused(f"timed out after {seconds:g} seconds") from None
        except httpx2.ConnectError:
            raise _Refused("could not connect to the server") from None
        except httpx2.RemoteProtocolError:
            raise _Refused("the server did not answer with valid HTTP") from None

    def _client(self) -> httpx2.AsyncClient:
        if self._tls is None:
            # The operator's CA settings (SSL_CERT_FILE, SSL_CERT_DIR) still count...
            self._tls = httpx2.create_ssl_context(trust_env=True)
        # ...but nothing else from the environment does: no proxy may carry a request to an
        # address that was not checked, and no .netrc credential goes to a tenant's URL.
        return httpx2.AsyncClient(
            verify=self._tls,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx2.Timeout(self._settings.timeout),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    # --- web_fetch --------------------------------------------------------------------------

    async def _fetch(self, url: str, arguments: Mapping[str, Any]) -> str:
        offset = arguments.get("offset", 0)
        limit = arguments.get("limit", self._settings.default_limit)
        if offset is None:
            offset = 0
        if limit is None:
            limit = self._settings.default_limit
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise _Refused("offset must be a non-negative integer")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise _Refused("limit must be a positive integer")
        save_to = arguments.get("save_to_file")
        target: Path | None = None
        if save_to is not None:
            if not isinstance(save_to, str) or not save_to:
                raise _Refused("save_to_file must be a non-empty path string")
            target = self._save_path(save_to)
        try:
            parsed = httpx2.URL(url)
        except (httpx2.InvalidURL, TypeError, ValueError):
            raise _Refused("not a valid URL") from None
        async with self._client() as client:
            response, final = await self._open(client, parsed)
            try:
                max_bytes = self._settings.max_bytes
                cap = max_bytes if target is not None else min(max_bytes, offset + limit)
                raw, more = await _read_capped(response, cap)
            finally:
                await response.aclose()
        total = len(raw) if not more else _declared_size(response)
        over_server_limit = more and cap == max_bytes
        content_type = response.headers.get("content-type", "")
        media_type = _media_type(content_type)
        head = [
            f"url: {final}",
            f"status_code: {response.status_code}",
            f"content_type: {content_type or 'unknown'}",
        ]
        if target is not None and save_to is not None:
            return await self._save(raw, more, total, response, target, save_to, head)
        window = raw[offset : offset + limit]
        if not _textual(media_type) or b"\x00" in window:
            raise _Refused(
                f"refusing to return binary content as text (content-type: "
                f"{media_type or 'unknown'}); use save_to_file to download it intact"
            )
        text = _decode(window, response.charset_encoding)
        if media_type in _HTML_TYPES and self._settings.extract_text:
            # A page of megabytes takes a while to parse: off the event loop.
            text = await asyncio.to_thread(html_to_text, text)
        head += [
            f"truncated: {'true' if more else 'false'}",
            f"total_bytes: {total if total is not None else 'unknown'}",
            f"offset: {offset}",
            f"returned_bytes: {len(window)}",
        ]
        if over_server_limit:
            text += (
                f"\n\n[Content truncated: this server reads at most {max_bytes} bytes of a"
                " response; bytes past that cannot be fetched.]"
            )
        elif more:
            text += (
                f"\n\n[Content truncated at {offset + len(window)} bytes. Total: "
                f"{total if total is not None else 'unknown'} bytes. Use offset/limit to"
                " paginate or save_to_file for full content.]"
            )
        return "\n".join(head) + "\n\n" + text

    async def _open(
        self, client: httpx2.AsyncClient, url: httpx2.URL
    ) -> tuple[httpx2.Response, httpx2.URL]:
        """The response to GET url after following redirects, each hop checked first."""
        current = url
        redirects = 0
        while True:
            try:
                destination = await self._destination(current)
            except _Refused as exc:
                if redirects:
                    raise _Refused(f"redirected to {current}; {exc}") from None
                raise
            # Cookies one hop set stay with it: the next may be another site on the same IP.
            client.cookies.clear()
            response = await _send(client, destination)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or location is None:
                if response.status_code >= 300:
                    await response.aclose()
                    reason = response.reason_phrase or "error"
                    raise _Refused(f"HTTP {response.status_code} {reason}")
                return response, current
            await response.aclose()
            if redirects >= self._max_redirects:
                raise _Refused(f"more than {self._max_redirects} redirects")
            redirects += 1
            try:
                # Relative to the URL as the model named it, not the pinned address.
                current = current.join(location)
            except (httpx2.InvalidURL, ValueError):
                raise _Refused("redirected to an invalid URL") from None

    async def _destination(self, url: httpx2.URL) -> _Destination:
        """url checked against the policy, with the address to connect to pinned."""
        if url.scheme not in _DEFAULT_PORTS:
            given = f"not {url.scheme}" if url.scheme else "and this URL has no scheme"
            raise _Refused(f"refused: only http and https URLs can be fetched, {given}")
        if url.userinfo:
            raise _Refused("refused: URLs with credentials are not fetched")
        host = url.raw_host.decode("ascii").lower().rstrip(".")
        if not host:
            raise _Refused("refused: the URL has no host")
        settings = self._settings
        if settings.allowed_domains and not _domain_matches(host, settings.allowed_domains):
            raise _Refused(f"refused: {host} is not among this bundle's allowed_domains")
        if _domain_matches(host, settings.blocked_domains):
            raise _Refused(f"refused: {host} is among this bundle's blocked_domains")
        port = url.port or _DEFAULT_PORTS[url.scheme]
        literal = _ip_literal(host)
        addresses = [literal] if literal is not None else await _resolve(host, port)
        for address in addresses:
            why = _why_not_public(address)
            if why is None or any(a.admits(host, _plain(address), port) for a in self._allow):
                continue
            # A name's internal addresses are not the tenant's business: only name the kind.
            subject = f"{host} is" if literal is not None else f"{host} resolves to"
            raise _Refused(f"refused: {subject} {why}; the operator has not allowed it")
        # The request goes to a checked address itself, so a second DNS answer cannot send
        # it elsewhere. The Host header keeps the name for the server; for https the
        # sni_hostname extension makes the TLS handshake send that name and verify the
        # certificate against it, exactly as if the name had been connected to.
        netloc = url.netloc.decode("ascii")
        extensions: dict[str, Any] = {}
        if url.scheme == "https" and literal is None:
            extensions["sni_hostname"] = host
        return _Destination(
            url=url,
            pinned=tuple(
                url.copy_with(host=str(_plain(address)), fragment=None) for address in addresses
            ),
            headers={"Host": netloc},
            extensions=extensions,
        )

    def _save_path(self, given: str) -> Path:
        """Where save_to_file writes: a path inside the session's workspace, resolved."""
        if "\x00" in given:
            raise _Refused("save_to_file must not contain NUL characters")
        candidate = Path(given)
        if not candidate.is_absolute():
            candidate = self._workspace / candidate
        try:
            resolved = candidate.resolve(strict=False)
        except (OSError, RuntimeError):
            raise _Refused(f"cannot resolve save_to_file {given!r}") from None
        if not resolved.is_relative_to(self._workspace) or resolved == self._workspace:
            raise _Refused(f"save_to_file {given!r} is outside the session's workspace")
        if not resolved.parent.is_dir():
            raise _Refused(
                f"the folder of save_to_file {given!r} does not exist; folders are not created"
            )
        return resolved

    async def _save(
        self,
        raw: bytes,
        more: bool,
        total: int | None,
        response: httpx2.Response,
        target: Path,
        given: str,
        head: list[str],
    ) -> str:
        media_type = _media_type(response.headers.get("content-type", ""))
        binary = not _textual(media_type) or b"\x00" in raw
        if binary:
            data = raw
            preview = f"[Binary content ({media_type or 'unknown type'}); no text preview.]"
        else:
            text = _decode(raw, response.charset_encoding)
            if media_type in _HTML_TYPES and self._settings.extract_text:
                text = await asyncio.to_thread(html_to_text, text)
            data = text.encode("utf-8")
            preview = text[:PREVIEW_CHARS]
            if len(text) > PREVIEW_CHARS:
                preview += f"\n\n[... {len(text) - PREVIEW_CHARS} more characters saved to {given}]"
        await asyncio.to_thread(_write_file, target, data, given)
        head += [
            f"saved_to: {given}",
            f"saved_bytes: {len(data)}",
            f"truncated: {'true' if more else 'false'}",
            f"total_bytes: {total if total is not None else 'unknown'}",
        ]
        if more:
            preview += (
                f"\n\n[Only the first {self._settings.max_bytes} bytes were fetched: this server"
                " reads no more of a response.]"
            )
        return "\n".join(head) + "\n\n" + preview

    # --- web_search -------------------------------------------------------------------------

    async def _search(self, arguments: Mapping[str, Any]) -> str:
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise _Refused("a non-empty 'query' string is required")
        if len(query) > MAX_QUERY_LENGTH:
            raise _Refused(f"the query is longer than {MAX_QUERY_LENGTH} characters")
        if not self._search_url:
            raise _Refused(
                "web search is not configured on this server (the operator has not set"
                " TANDEM_TOOLS_WEB_SEARCH_URL)"
            )
        count = self._settings.max_results
        # Errors never quote the backend's URL: it is the operator's and may hold a key.
        async with (
            self._client() as client,
            client.stream(
                "GET",
                self._search_url,
                params={"q": query, "count": str(count)},
                headers={"Accept": "application/json"},
            ) as response,
        ):
            if response.status_code != 200:
                raise _Refused(f"the search backend answered HTTP {response.status_code}")
            raw, more = await _read_capped(response, self._settings.max_bytes)
        if more:
            raise _Refused("the search backend's answer is larger than this server reads")
        try:
            results = _search_results(json.loads(raw))
        except (ValueError, UnicodeDecodeError):
            raise _Refused(
                'the search backend\'s answer is not {"results": [{"title", "url",'
                ' "snippet"}]} JSON'
            ) from None
        results = results[:count]
        if not results:
            return f"No results for {query!r}."
        lines = [f"Results for {query!r}:"]
        for number, (title, url, snippet) in enumerate(results, 1):
            lines.append("")
            lines.append(f"{number}. {title or url}")
            lines.append(f"   {url}")
            if snippet:
                lines.append(f"   {snippet}")
        return "\n".join(lines)


def _search_results(document: Any) -> list[tuple[str, str, str]]:
    """(title, url, snippet) of each result; ValueError for any other shape."""
    if not isinstance(document, Mapping) or not isinstance(document.get("results"), list):
        raise ValueError("no results list")
    results: list[tuple[str, str, str]] = []
    for item in document["results"]:
        if not isinstance(item, Mapping):
            raise ValueError("a result is not an object")
        fields = [item.get(key, "") for key in ("title", "url", "snippet")]
        if not all(isinstance(value, str) for value in fields):
            raise ValueError("a result field is not a string")
        title, url, snippet = (" ".join(value.split())[:2000] for value in fields)
        results.append((title[:512], url, snippet))
    return results


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address host resolves to, in the resolver's order."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise _Refused(f"could not resolve {host}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        try:
            address = ipaddress.ip_address(str(info[4][0]))
        except ValueError:
            continue
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise _Refused(f"could not resolve {host}")
    return addresses


async def _send(client: httpx2.AsyncClient, destination: _Destination) -> httpx2.Response:
    """The response from the first checked address that takes the connection."""
    for number, pinned in enumerate(destination.pinned, 1):
        request = client.build_request(
            "GET",
            pinned,
            headers=dict(destination.headers),
            extensions=dict(destination.extensions),
        )
        try:
            return await client.send(request, stream=True)
        except httpx2.ConnectError as exc:
            tls = _tls_error(exc)
            if tls is not None:
                raise _Refused(tls) from None
            if number == len(destination.pinned):
                raise
    raise _Refused("no address to connect to")


def _tls_error(exc: BaseException) -> str | None:
    """What went wrong in the TLS handshake behind exc, if that is what failed."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"the server's TLS certificate was not accepted ({seen.verify_message})"
        if isinstance(seen, ssl.SSLError):
            return "the TLS handshake with the server failed"
        seen = seen.__cause__ or seen.__context__
    return None


def _declared_size(response: httpx2.Response) -> int | None:
    """The body's size from Content-Length, when it describes the bytes as read."""
    length = response.headers.get("content-length", "")
    if response.headers.get("content-encoding") or not length.isascii() or not length.isdigit():
        return None
    return int(length)


def _write_file(path: Path, data: bytes, given: str) -> None:
    try:
        # The path is resolved already: O_NOFOLLOW refuses a symlink swapped in since.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW | _NONBLOCK, 0o666)
    except OSError as exc:
        raise _Refused(
            f"cannot write save_to_file {given!r}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except OSError as exc:
        raise _Refused(
            f"cannot write save_to_file {given!r}: {exc.strerror or type(exc).__name__}"
        ) from None
    finally:
        os.close(fd)
