"""Sign-in, sessions, CSRF tokens, the sign-in rate limit and the pages' security headers.

A session is a random 256-bit cookie; the store keeps only its SHA-256 (migration 0007)
with its expiry and the hash of the analyst token that opened it, so a session ends when
it expires, when it is revoked (sign-out, the sessions list) or when its token is no longer
accepted. CSRF tokens are an HMAC of the session (or, on the sign-in form, of a pre-session
cookie) under a key the store keeps, so they need no storage and hold across collectors.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from collector.auth import hash_secret, matches_any
from collector.dashboard.records import Records, SessionRecord
from collector.state import CONFIG, STORE

SESSION_COOKIE: Final = "fw_session"
LOGIN_COOKIE: Final = "fw_login"
CSRF_SECRET: Final = "dashboard_csrf_key"
CSRF_FIELD: Final = "csrf"

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:;"
    " connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none';"
    " frame-ancestors 'none'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def is_dashboard_path(path: str) -> bool:
    """The API's own headers are another part's: the dashboard sets its own elsewhere."""
    return not (
        path.startswith("/api/") or path in ("/healthz", "/metrics") or path.startswith("/feeds/")
    )


async def add_page_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every dashboard response gets the security headers."""
    if not is_dashboard_path(request.path):
        return
    for name, value in PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.content_type in ("text/html", "application/json"):
        response.headers.setdefault("Cache-Control", "no-store")


class RateLimiter:
    """At most ``limit`` attempts per ``period`` seconds per key, in memory only.

    Keys are HMACs of the client's address under a key made at start-up: the address
    itself is never kept, and the table is bounded (the oldest keys go first).
    """

    def __init__(
        self,
        limit: int,
        period: float = 60.0,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.period = period
        self.max_keys = max_keys
        self.clock = clock
        self._salt = secrets.token_bytes(16)
        self._seen: OrderedDict[bytes, deque[float]] = OrderedDict()

    def key(self, address: str | None) -> bytes:
        return hmac.new(self._salt, (address or "").encode(), hashlib.sha256).digest()

    def retry_after(self, address: str | None) -> float:
        """0 if an attempt is allowed now (and counts it), else seconds to wait."""
        now = self.clock()
        key = self.key(address)
        times = self._seen.pop(key, None) or deque()
        while times and times[0] <= now - self.period:
            times.popleft()
        self._seen[key] = times
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        if len(times) >= self.limit:
            return max(1.0, times[0] + self.period - now)
        times.append(now)
        return 0.0


@dataclass(frozen=True, slots=True)
class Session:
    record: SessionRecord
    csrf: str


class Sessions:
    """Sessions of one collector app."""

    def __init__(self, records: Records, ttl_s: float) -> None:
        self.records = records
        self.ttl_s = ttl_s
        self._csrf_key: bytes | None = None

    async def csrf_key(self, request: web.Request) -> bytes:
        if self._csrf_key is None:
            self._csrf_key = await request.app[STORE].secret(CSRF_SECRET)
        return self._csrf_key

    async def csrf_for(self, request: web.Request, subject: str) -> str:
        key = await self.csrf_key(request)
        return hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()[:40]

    async def token_accepted(self, request: web.Request, token: str) -> bool:
        """Whether ``token`` is one of this collector's analyst tokens."""
        if not token or len(token) > 256:
            return False
        if matches_any(token, request.app[CONFIG].analyst_tokens):
            return True
        return await request.app[STORE].analyst_token_exists(hash_secret(token))

    async def _token_hash_accepted(self, request: web.Request, token_hash: str) -> bool:
        configured = [hash_secret(t) for t in request.app[CONFIG].analyst_tokens]
        if matches_any(token_hash, configured):
            return True
        return await request.app[STORE].analyst_token_exists(token_hash)

    async def open(self, request: web.Request, token: str) -> tuple[str, float]:
        """A new session for ``token`` (already checked): the cookie value and its expiry."""
        cookie = secrets.token_urlsafe(32)
        now = time.time()
        expires = now + self.ttl_s
        await self.records.add_session(hash_secret(cookie), hash_secret(token), now, expires)
        return cookie, expires

    async def current(self, request: web.Request) -> Session | None:
        """The request's live session, or None."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie or len(cookie) > 128:
            return None
        record = await self.records.session(hash_secret(cookie))
        if record is None or record.revoked or record.expires_at <= time.time():
            return None
        if not await self._token_hash_accepted(request, record.token_hash):
            return None
        return Session(record, await self.csrf_for(request, "session:" + record.session_hash))

    async def check_csrf(self, request: web.Request, session: Session, sent: str) -> bool:
        return hmac.compare_digest(session.csrf.encode(), (sent or "").encode())

    async def login_csrf(self, request: web.Request, pre_cookie: str) -> str:
        return await self.csrf_for(request, "login:" + pre_cookie)


def set_cookie(
    response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: float
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=int(max_age),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def clear_cookie(response: web.StreamResponse, request: web.Request, name: str) -> None:
    response.set_cookie(
        name, "", max_age=0, path="/", httponly=True, samesite="Strict", secure=request.secure
    )
