"""The agent's side of the collector's HTTP API: one ``CollectorClient``, enroll, whoami,
targets, batches.

A client holds the collector's URL, the agent's token and two sessions, on purpose (both
trust the system's roots plus ``upload.ca_file``):

- the *direct* session never uses a proxy (not even one from ``HTTP_PROXY``): ``whoami``
  must see the network the agent measures from, not the proxy's;
- the *upload* session goes through ``upload.proxy`` when one is configured, for when the
  collector itself is blocked: enrollment, targets, control and batches.

Network outcomes are data: requests return ``ApiResult`` or raise ``ApiError`` whose
``reason`` is a short, address-free word for logs and ``agent status``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import aiohttp

from shared.codec import CONTENT_TYPE, decode, encode
from shared.errors import CodecError, FilterwatchError
from shared.schema import NetworkFacts

if TYPE_CHECKING:
    from agent.config import UploadConfig

USER_AGENT = "filterwatch-agent/0.1"


class ApiError(FilterwatchError):
    """The collector could not be reached or gave an unusable answer."""

    def __init__(
        self, reason: str, status: int | None = None, retry_after: str | None = None
    ) -> None:
        super().__init__(reason if status is None else f"{reason} (HTTP {status})")
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ApiResult:
    status: int
    body: Any  # the decoded JSON or msgpack document
    date: str | None  # the collector's Date header (the agent's clock check)
    sent_at: float  # wall clock when the request was sent and answered
    received_at: float


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's trust store plus ``ca_file`` (a lab or private collector's CA)."""
    ctx = ssl.create_default_context()
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


TrustSource = ssl.SSLContext | Path | None  # a context, or a CA file to add to the system's


def _context(trust: TrustSource) -> ssl.SSLContext:
    return trust if isinstance(trust, ssl.SSLContext) else ssl_context(trust)


def _direct_session(trust: TrustSource, limit: int = 4) -> aiohttp.ClientSession:
    """A session that connects straight to the collector, ignoring proxy settings."""
    connector = aiohttp.TCPConnector(ssl=_context(trust), limit=limit)
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, headers={"User-Agent": USER_AGENT}
    )


def _upload_session(
    proxy: str | None, trust: TrustSource, limit: int = 8
) -> tuple[aiohttp.ClientSession, str | None]:
    """A session for uploads, through ``proxy`` when one is configured, and the proxy each
    request names (HTTP proxies go per request; None: direct, or SOCKS in the connector)."""
    ctx = _context(trust)
    headers = {"User-Agent": USER_AGENT}
    if proxy is not None and urlsplit(proxy).scheme.startswith("socks"):
        from aiohttp_socks import ProxyConnector

        # rdns: the proxy resolves the collector's name, in case DNS is what is censored.
        socks = ProxyConnector.from_url(proxy, ssl=ctx, limit=limit, rdns=True)
        session = aiohttp.ClientSession(connector=socks, trust_env=False, headers=headers)
        return session, None
    connector = aiohttp.TCPConnector(ssl=ctx, limit=limit)
    session = aiohttp.ClientSession(connector=connector, trust_env=False, headers=headers)
    return session, proxy


class CollectorClient:
    """The collector as this agent reaches it: its URL, the agent's token (None before
    enrollment), the upload session with its proxy, and the direct session for ``whoami``.
    Made inside a running event loop; ``close`` it (or use it as ``async with``)."""

    def __init__(
        self, url: str, token: str | None, *, proxy: str | None = None, trust: TrustSource = None
    ) -> None:
        ctx = _context(trust)  # one context for both sessions: the system's roots cost memory
        self.url = url
        self.token = token
        self._upload, self._proxy = _upload_session(proxy, ctx)
        self._direct = _direct_session(ctx)

    @classmethod
    async def open(cls, url: str, token: str | None, upload: UploadConfig | None = None) -> Self:
        """A client through ``upload.proxy``, trusting ``upload.ca_file`` too; the TLS
        context is built off the event loop (loading the system's roots reads files)."""
        ctx = await asyncio.to_thread(ssl_context, upload.ca_file if upload else None)
        return cls(url, token, proxy=upload.proxy if upload else None, trust=ctx)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | bytes | None = None,
        timeout_s: float = 30.0,
        extra_headers: Mapping[str, str] | None = None,
        direct: bool = False,
    ) -> ApiResult:
        """One request for ``path`` with the agent's token: through the upload session, or
        ``direct`` (never through a proxy). Non-2xx answers raise ``ApiError`` with the status
        and any ``Retry-After``; so do network failures (status None)."""
        return await _call(
            self._direct if direct else self._upload,
            method,
            self.url.rstrip("/") + path,
            token=self.token,
            body=body,
            proxy=None if direct else self._proxy,
            timeout_s=timeout_s,
            extra_headers=extra_headers,
        )

    async def close(self) -> None:
        await self._upload.close()
        await self._direct.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _decode_body(content_type: str, data: bytes) -> Any:
    if not data:
        return None
    if content_type == CONTENT_TYPE:
        return decode(data)
    if content_type.endswith("json"):
        return json.loads(data)
    return None


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: Mapping[str, Any] | bytes | None = None,
    proxy: str | None = None,
    timeout_s: float = 30.0,
    extra_headers: Mapping[str, str] | None = None,
) -> ApiResult:
    headers = {"Accept": f"{CONTENT_TYPE}, application/json;q=0.5", **(extra_headers or {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data: bytes | None = None
    if body is not None:
        data = body if isinstance(body, bytes) else encode(dict(body))
        headers["Content-Type"] = CONTENT_TYPE
    sent_at = time.time()
    try:
        async with session.request(
            method,
            url,
            data=data,
            headers=headers,
            proxy=proxy,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as resp:
            raw = await resp.read()
            received_at = time.time()
            if not 200 <= resp.status < 300:
                raise ApiError(
                    _error_code(resp.content_type, raw),
                    status=resp.status,
                    retry_after=resp.headers.get("Retry-After"),
                )
            try:
                doc = _decode_body(resp.content_type, raw)
            except (CodecError, ValueError):
                raise ApiError("unreadable_answer", status=resp.status) from None
            return ApiResult(resp.status, doc, resp.headers.get("Date"), sent_at, received_at)
    except TimeoutError:
        raise ApiError("timeout") from None
    except aiohttp.ClientConnectorError:
        raise ApiError("connect_failed") from None
    except aiohttp.ClientError as exc:
        raise ApiError(f"connection_error:{type(exc).__name__}") from None
    except OSError:
        raise ApiError("network_error") from None


def _error_code(content_type: str, raw: bytes) -> str:
    """The collector's error code (``{"error": code}``); never its free-text detail, which
    could echo something we would not want in a log."""
    try:
        doc = _decode_body(content_type, raw)
    except (CodecError, ValueError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])[:64]
    return "http_error"


async def enroll(collector: CollectorClient, code: str) -> tuple[str, str]:
    """Trade an enrollment code for ``(agent_id, token)``."""
    res = await collector.request("POST", "/api/v1/enroll", body={"code": code})
    doc = res.body
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("agent_id"), str)
        or not isinstance(doc.get("token"), str)
    ):
        raise ApiError("unreadable_answer", status=res.status)
    return doc["agent_id"], doc["token"]


def network_from_whoami(doc: Any) -> NetworkFacts | None:
    """The network the collector sees, or None when it does not know (AS0 or no country):
    the agent never guesses its network."""
    if not isinstance(doc, dict):
        return None
    asn, cc, name = doc.get("asn"), doc.get("cc"), doc.get("network_name") or ""
    if type(asn) is not int or asn <= 0 or asn >= 2**32:
        return None
    if not isinstance(cc, str) or len(cc) != 2 or not cc.isalpha() or cc.upper() == "ZZ":
        return None
    if not isinstance(name, str):
        name = ""
    return {"asn": asn, "cc": cc.upper(), "network_name": name[:256]}


def targets_from_answer(doc: Any) -> list[str] | None:
    """Target URLs from GET /api/v1/targets: ``{"targets": [...]}`` or a bare list, each an
    URL string or a map with ``url``. None when the answer has no list at all."""
    items = doc.get("targets") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        return None
    urls: list[str] = []
    for item in items:
        url = item.get("url") if isinstance(item, dict) else item
        if isinstance(url, str) and urlsplit(url).scheme in ("http", "https"):
            urls.append(url)
    return list(dict.fromkeys(urls))  # once each, in the collector's order
