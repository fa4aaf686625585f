"""Real loopback servers that behave like sites and like censors, for the probe tests.

Everything listens on 127.0.0.1 with a port the kernel picks; nothing here sends a packet
beyond loopback. Each server's behaviour is a plain attribute that a test may change
between two measurements (measure the control with the censor off, then turn it on).

- ``DnsResponder``: a small DNS server over UDP (dnspython's wire format) with a zone
  each test fills: answers, NXDOMAIN, SERVFAIL, silence, and injection (a forged answer
  first, the genuine one a little later, to the same query id).
- ``SniServer``: TLS in front of an aiohttp app. It peeks at the ClientHello and, when the
  SNI matches a censored name, resets the connection (SO_LINGER 0), closes it, or never
  answers; otherwise it hands the socket to the app over TLS.
- ``HttpSite``: an aiohttp app whose pages a test sets (status, headers, body).
- ``SilentServer``: accepts TCP connections and never says a word.
- ``refused_port()``: a port on 127.0.0.1 where nothing listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import trustme
from aiohttp import web

LOOPBACK = "127.0.0.1"

# --- DNS ------------------------------------------------------------------------------


@dataclass
class Name:
    """How the responder answers for one name."""

    answers: list[str] = field(default_factory=list)
    rcode: dns.rcode.Rcode = dns.rcode.Rcode.NOERROR
    ttl: int = 60
    late_answers: list[str] | None = None  # sent after ``late_delay_s`` as a second reply
    late_delay_s: float = 0.05
    silent: bool = False


class DnsResponder(asyncio.DatagramProtocol):
    """A DNS server on 127.0.0.1 UDP; unknown names get NXDOMAIN."""

    def __init__(self) -> None:
        self.zone: dict[str, Name] = {}
        self.queries: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """The ``ip:port`` to give ``ProbeOptions.resolver``."""
        return f"{LOOPBACK}:{self.port}"

    def answer(self, name: str, *addresses: str, ttl: int = 60) -> None:
        self.zone[name] = Name(answers=list(addresses), ttl=ttl)

    def inject(self, name: str, forged: list[str], genuine: list[str] | None = None) -> None:
        """Answer ``forged`` at once and, if given, ``genuine`` a little later (same id)."""
        self.zone[name] = Name(answers=forged, late_answers=genuine)

    def fail(self, name: str, rcode: dns.rcode.Rcode) -> None:
        self.zone[name] = Name(rcode=rcode)

    def silence(self, name: str) -> None:
        self.zone[name] = Name(silent=True)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # CPython's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return  # not DNS: a real server ignores it too
        qname = query.question[0].name.to_text().rstrip(".").lower()
        self.queries.append(qname)
        rule = self.zone.get(qname, Name(rcode=dns.rcode.NXDOMAIN))
        if rule.silent:
            return
        self._send(query, rule.rcode, rule.answers, rule.ttl, addr)
        if rule.late_answers is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(
                rule.late_delay_s,
                self._send,
                query,
                dns.rcode.NOERROR,
                rule.late_answers,
                rule.ttl,
                addr,
            )

    def _send(
        self,
        query: dns.message.Message,
        rcode: dns.rcode.Rcode,
        answers: list[str],
        ttl: int,
        addr: tuple[str, int],
    ) -> None:
        reply = dns.message.make_response(query)
        reply.set_rcode(rcode)
        question = query.question[0]
        if answers and question.rdtype == dns.rdatatype.A:
            reply.answer.append(
                dns.rrset.from_text(
                    question.name, ttl, dns.rdataclass.IN, dns.rdatatype.A, *answers
                )
            )
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply.to_wire(), addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def start_dns() -> DnsResponder:
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(
        DnsResponder, local_addr=(LOOPBACK, 0)
    )
    responder.port = transport.get_extra_info("sockname")[1]
    return responder


# --- certificates ---------------------------------------------------------------------


@dataclass(frozen=True)
class LoopbackPki:
    """A throwaway CA, its PEM file for ``ProbeOptions.ca_file``, and a way to make certs."""

    ca: trustme.CA
    ca_file: Path

    def server_context(self, *names: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*names).configure_cert(ctx)
        return ctx


def make_pki(directory: Path) -> LoopbackPki:
    ca = trustme.CA()
    path = directory / "test-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return LoopbackPki(ca=ca, ca_file=path)


# --- HTTP -----------------------------------------------------------------------------


@dataclass
class Page:
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer the request


class HttpSite:
    """An aiohttp app serving ``pages`` by path (``"*"`` for any other path)."""

    def __init__(self) -> None:
        self.pages: dict[str, Page] = {}
        self.scripts: dict[str, list[Page]] = {}
        self.requests: list[str] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    def set(self, path: str, page: Page) -> None:
        self.pages[path] = page
        self.scripts.pop(path, None)

    def script(self, path: str, *pages: Page) -> None:
        """Serve ``pages`` in turn, one per request, then the last one for good (the
        control's request comes first, then the censored agent's)."""
        self.scripts[path] = list(pages[:-1])
        self.pages[path] = pages[-1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(f"{request.host}{request.path}")
        key = request.path if request.path in self.pages else "*"
        queued = self.scripts.get(key)
        page = queued.pop(0) if queued else self.pages.get(key)
        if page is None:
            raise web.HTTPNotFound()
        if page.hang:
            await asyncio.Event().wait()
        return web.Response(
            status=page.status,
            text=page.body,
            content_type="text/html",
            headers=page.headers,
        )


def html_page(title: str, paragraphs: int = 40) -> str:
    text = "".join(f"<p>Paragraph {i} of the real site, with words.</p>" for i in range(paragraphs))
    return f"<html><head><title>{title}</title></head><body>{text}</body></html>"


@contextlib.asynccontextmanager
async def serve_http(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1; yields the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port
    finally:
        await runner.cleanup()


# --- TLS with SNI-based censorship ----------------------------------------------------


def sni_of(client_hello: bytes) -> str | None:
    """The server name in a TLS ClientHello record, or None (no SNI, or not a ClientHello)."""
    try:
        if client_hello[0] != 0x16 or client_hello[5] != 0x01:
            return None
        pos = 5 + 4 + 2 + 32  # record header, handshake header, version, random
        pos += 1 + client_hello[pos]  # session id
        pos += 2 + struct.unpack_from("!H", client_hello, pos)[0]  # cipher suites
        pos += 1 + client_hello[pos]  # compression methods
        end = pos + 2 + struct.unpack_from("!H", client_hello, pos)[0]
        pos += 2
        while pos + 4 <= end:
            ext_type, ext_len = struct.unpack_from("!HH", client_hello, pos)
            pos += 4
            if ext_type == 0:  # server_name: list length, name type, name length, name
                name_len = struct.unpack_from("!H", client_hello, pos + 3)[0]
                return client_hello[pos + 5 : pos + 5 + name_len].decode("ascii")
            pos += ext_len
    except (IndexError, struct.error, UnicodeDecodeError):
        return None
    return None


class SniServer:
    """TLS in front of an aiohttp app, censoring by SNI.

    ``reset``, ``close`` and ``blackhole`` are sets of names: a ClientHello whose SNI ends
    with one of them is answered by a TCP reset, a clean close, or silence.
    """

    def __init__(self, app: web.Application, context: ssl.SSLContext) -> None:
        self.app = app
        self.context = context
        self.reset: set[str] = set()
        self.close: set[str] = set()
        self.blackhole: set[str] = set()
        self.seen_sni: list[str | None] = []
        self.port = 0
        self._listener: socket.socket | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: list[socket.socket] = []

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, 0))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        task = asyncio.get_running_loop().create_task(self._accept_loop())
        self._tasks.add(task)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conn in self._held:
            conn.close()
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            conn.setblocking(False)
            task = loop.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _matches(sni: str | None, names: set[str]) -> bool:
        return sni is not None and any(sni == n or sni.endswith("." + n) for n in names)

    async def _serve(self, conn: socket.socket) -> None:
        hello = await _peek_record(conn)
        sni = sni_of(hello)
        self.seen_sni.append(sni)
        if self._matches(sni, self.reset):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        elif self._matches(sni, self.close):
            # Unread bytes would turn the close into a reset: read the ClientHello first.
            with contextlib.suppress(BlockingIOError):
                conn.recv(len(hello))
            conn.close()
        elif self._matches(sni, self.blackhole):
            self._held.append(conn)
        else:
            assert self._runner is not None and self._runner.server is not None
            loop = asyncio.get_running_loop()
            try:
                await loop.connect_accepted_socket(self._runner.server, conn, ssl=self.context)
            except (OSError, ssl.SSLError):
                conn.close()  # the client gave up or failed the handshake: its business


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _peek_record(conn: socket.socket, limit_s: float = 5.0) -> bytes:
    """Wait for a whole TLS record at the head of the socket without consuming it."""
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(limit_s):
        while True:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(conn.fileno(), _wake, readable)
            try:
                await readable
            finally:
                loop.remove_reader(conn.fileno())
            try:
                data = conn.recv(65536, socket.MSG_PEEK)
            except BlockingIOError:
                continue
            if not data:
                return data
            if len(data) >= 5 and len(data) >= 5 + struct.unpack_from("!H", data, 3)[0]:
                return data
            await asyncio.sleep(0.005)  # part of a record: the rest is on its way


@contextlib.asynccontextmanager
async def serve_sni(app: web.Application, context: ssl.SSLContext) -> AsyncIterator[SniServer]:
    server = SniServer(app, context)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# --- silence and refusal --------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_silent() -> AsyncIterator[int]:
    """Accept TCP connections and never answer; yields the port."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def refused_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound for a moment, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])
