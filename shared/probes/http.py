"""The HTTP step: one GET over HTTP/1.1, following redirects by hand, with a body cap.

The addresses come from the DNS step (a pinned resolver), so the request reaches exactly
the addresses that were measured and no second lookup goes to the system. Redirects are
followed here rather than by aiohttp so that every hop's destination passes through
``may_connect`` first: aiohttp connects to an IP literal without asking any resolver.
A hop that may not be visited ends the walk, and the redirect that pointed there is the
final response (a blockpage redirect is evidence in itself).

What is kept: status, body length and SHA-256, title, and the headers worth comparing.
Nothing that may carry the volunteer's address is kept: addresses in header values, the
title and the final URL are replaced by ``<addr>``, and the headers that exist to echo
the client (X-Forwarded-For and kin) are dropped. The raw headers and body go back to the
caller only in memory, for blockpage matching.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDictProxy
from yarl import URL

from shared.logging import scrub
from shared.probes.failures import classify, wire
from shared.probes.headers import COMMON_SERVER_HEADERS, HEADERS_OF_NOTE, NEVER_RECORDED
from shared.probes.tls import TlsContexts
from shared.schema import MAX_URL_LENGTH, Failure, HttpFacts

USER_AGENT: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36"
)
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})

MAX_HEADERS: Final = 32
MAX_HEADER_VALUE: Final = 256
MAX_TITLE: Final = 256
MAX_HEADER_NAME: Final = 64
_TITLE_RE: Final = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_READ_CHUNK: Final = 64 * 1024

Lookup = Callable[[str], Awaitable[tuple[list[str], Failure | None]]]
MayConnect = Callable[[str, int], bool]  # (address, port): False skips it, raising stops


@dataclass(slots=True)
class HttpOutcome:
    """The facts, and (in memory only) the final response's raw headers and body."""

    facts: HttpFacts
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None


class PinnedResolver(AbstractResolver):
    """An aiohttp resolver that only knows the addresses the probe has already vetted."""

    def __init__(self, pinned: dict[str, list[str]]) -> None:
        self.pinned = pinned

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self.pinned.get(host.lower().rstrip("."))
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "no vetted address for this host")
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        return None


def title_of(body: bytes, charset: str | None) -> str | None:
    """The page's ``<title>``, whitespace folded, entities decoded, addresses scrubbed."""
    match = _TITLE_RE.search(body)
    if not match:
        return None
    try:
        text = match.group(1).decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        text = match.group(1).decode("utf-8", errors="replace")
    text = " ".join(html.unescape(text).split())
    return scrub(text)[:MAX_TITLE]


def recorded_headers(headers: CIMultiDictProxy[str] | list[tuple[str, str]]) -> dict[str, str]:
    """The headers worth keeping for comparison: the ones of note and the uncommon ones."""
    items = headers.items() if isinstance(headers, CIMultiDictProxy) else headers
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        if key in NEVER_RECORDED or key in out or len(key) > MAX_HEADER_NAME:
            continue
        if key in HEADERS_OF_NOTE or key not in COMMON_SERVER_HEADERS:
            out[key] = scrub(value)[:MAX_HEADER_VALUE]
            if len(out) >= MAX_HEADERS:
                break
    return out


def http_failure(exc: BaseException) -> Failure:
    """The failure for what aiohttp raised, unwrapped to the socket or TLS error inside."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return classify(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return classify(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Failure.EOF_ERROR
    if isinstance(exc, aiohttp.ClientPayloadError):
        cause = exc.__cause__ or exc.__context__
        return classify(cause) if isinstance(cause, OSError) else Failure.EOF_ERROR
    return classify(exc)


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    total = 0
    while total <= cap:
        chunk = await resp.content.read(min(_READ_CHUNK, cap + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    body = b"".join(chunks)
    return body[:cap], len(body) > cap


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


async def _vet_hop(
    url: URL, pinned: dict[str, list[str]], lookup: Lookup, may_connect: MayConnect
) -> Failure | bool:
    """Make ``url``'s host reachable through the pinned resolver.

    Returns True when the hop may go ahead, False when no address of it may be visited,
    or the DNS failure that stopped it.
    """
    if url.scheme not in ("http", "https") or not url.raw_host:
        return False
    host = url.raw_host.lower().rstrip(".")
    if host in pinned:
        return True
    literal = _ip_literal(host)
    if literal is not None:
        addresses: list[str] = [literal]
    else:
        addresses, failure = await lookup(host)
        if failure is not None:
            return failure
    port = url.port or (443 if url.scheme == "https" else 80)
    allowed = [a for a in addresses if may_connect(a, port)]
    if not allowed:
        return False
    pinned[host] = allowed
    return True


async def fetch(
    url: str,
    pinned: dict[str, list[str]],
    *,
    lookup: Lookup,
    may_connect: MayConnect,
    contexts: TlsContexts,
    body_cap: int,
    max_redirects: int,
    until: float,
) -> HttpOutcome:
    """GET ``url`` by loop time ``until``; failures come back in the facts."""
    current = URL(url)
    redirects = 0
    connector = aiohttp.TCPConnector(
        resolver=PinnedResolver(pinned),
        ssl=contexts.verifying,
        use_dns_cache=False,
        force_close=True,
    )
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
        "Accept-Language": "en-US,en;q=0.9",
        "Accept-Encoding": "gzip, deflate",
    }
    async with aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        trust_env=False,  # a proxy from the environment would measure the proxy's network
        timeout=aiohttp.ClientTimeout(total=None),
    ) as session:
        try:
            async with asyncio.timeout_at(until):
                while True:
                    async with session.get(current, allow_redirects=False) as resp:
                        location = resp.headers.get("Location")
                        if (
                            resp.status in REDIRECT_STATUSES
                            and location
                            and redirects < max_redirects
                        ):
                            try:
                                target = current.join(URL(location))
                            except ValueError:
                                target = None
                            if target is not None:
                                vetted = await _vet_hop(target, pinned, lookup, may_connect)
                                if vetted is True:
                                    redirects += 1
                                    current = target
                                    continue
                                if isinstance(vetted, Failure):
                                    return _failed(current, redirects, vetted)
                        body, truncated = await _read_capped(resp, body_cap)
                        return HttpOutcome(
                            facts={
                                "url": _recorded_url(resp.url),
                                "status": resp.status,
                                "body_length": len(body),
                                "body_sha256": hashlib.sha256(body).hexdigest(),
                                "title": title_of(body, resp.charset),
                                "headers": recorded_headers(resp.headers),
                                "redirects": redirects,
                                "failure": None,
                                "body_truncated": truncated,
                            },
                            headers=list(resp.headers.items()),
                            body=body,
                        )
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return _failed(current, redirects, http_failure(exc))


def _recorded_url(url: URL) -> str:
    return scrub(str(url))[:MAX_URL_LENGTH]


def _failed(url: URL, redirects: int, failure: Failure) -> HttpOutcome:
    return HttpOutcome(
        facts={
            "url": _recorded_url(url),
            "status": None,
            "body_length": None,
            "body_sha256": None,
            "title": None,
            "headers": {},
            "redirects": redirects,
            "failure": wire(failure),
            "body_truncated": False,
        }
    )
