"""The lab's servers: sites, resolvers, the blockpage, and the routers' transparent proxies.

All of them run in the lab orchestrator's one event loop. Each listening socket is made
inside the namespace it serves (``Namespaces.listener``) and stays there, so one process
serves the internet's sites and resolver and every router's resolver and proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import ssl
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import trustme
from aiohttp import web

from lab.netns import Namespaces
from lab.plan import INTERNET_NS, PROXY_PORT, LabPlan
from lab.truth import CensorRound

SO_ORIGINAL_DST = 80
_MAX_HEAD = 16 * 1024
_IO_TIMEOUT_S = 10.0


def iran_blockpage(blockpage_ip: str) -> bytes:
    """The page Iranian filters served in 2013: an iframe pointing at the filtering server."""
    return (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1256">'
        "<title>M1-6</title></head><body>"
        f'<iframe src="http://{blockpage_ip}:80?type=Invalid Site&policy=MainPolicy " '
        'style="width: 100%; height: 100%" scrolling="no" marginwidth="0" marginheight="0" '
        'frameborder="0" vspace="0" hspace="0"></iframe></body></html>'
    ).encode()


def site_page(host: str) -> bytes:
    """A site's page: a title of its own and a body of a stable, realistic size."""
    seed = hashlib.sha256(host.encode()).hexdigest()
    paragraphs = "".join(f"<p>{host} lab content {i} {seed}</p>\n" for i in range(60))
    return (
        f"<!doctype html><html><head><title>{host} - lab site</title></head>"
        f"<body><h1>{host}</h1>\n{paragraphs}</body></html>\n"
    ).encode()


@dataclass
class RouterState:
    """The censor of one ISP as it stands now; the orchestrator swaps it at round boundaries.

    ``rng`` draws, per query and per request, whether a method with a rate below 1 blocks.
    """

    current: CensorRound
    blockpage_ip: str
    rng: random.Random = field(default_factory=random.Random)


def quiet_connection_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Censors reset connections all the time: the servers' resulting errors are expected
    and not worth a traceback; anything else still goes to the default handler."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError | ssl.SSLError | asyncio.CancelledError | TimeoutError):
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


# --- the lab CA -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabTls:
    ca_file: Path
    server_context: ssl.SSLContext


def make_tls(plan: LabPlan, directory: Path) -> LabTls:
    """A lab CA (written to ``directory/lab-ca.pem`` for agents and the collector) and one
    server certificate for every site."""
    ca = trustme.CA(organization_name="filterwatch lab CA")
    cert = ca.issue_cert(*sorted({s.host for s in plan.sites}))
    ca_file = directory / "lab-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return LabTls(ca_file, ctx)


# --- HTTP servers -----------------------------------------------------------------------


def _sites_app(hosts: set[str]) -> web.Application:
    pages = {host: site_page(host) for host in hosts}

    async def page(request: web.Request) -> web.Response:
        host = (request.host or "").split(":")[0].lower()
        body = pages.get(host)
        if body is None:
            return web.Response(status=404, text="no such site in the lab\n")
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return app


def _blockpage_app(blockpage_ip: str) -> web.Application:
    body = iran_blockpage(blockpage_ip)

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/html", charset="windows-1256")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return app


async def start_http(namespaces: Namespaces, plan: LabPlan, tls: LabTls) -> list[web.AppRunner]:
    """Sites on their addresses (80 and 443) and the blockpage on ``blockpage_ip:80``."""
    runners = []
    sites = web.AppRunner(_sites_app({s.host for s in plan.sites}), access_log=None)
    await sites.setup()
    for s in plan.sites:
        await web.SockSite(sites, namespaces.listener(INTERNET_NS, s.address, 80)).start()
        await web.SockSite(
            sites, namespaces.listener(INTERNET_NS, s.address, 443), ssl_context=tls.server_context
        ).start()
    runners.append(sites)
    blockpage = web.AppRunner(_blockpage_app(plan.blockpage_ip), access_log=None)
    await blockpage.setup()
    await web.SockSite(blockpage, namespaces.listener(INTERNET_NS, plan.blockpage_ip, 80)).start()
    runners.append(blockpage)
    return runners


# --- DNS --------------------------------------------------------------------------------


def zone_answer(query: dns.message.Message, zone: dict[str, str]) -> bytes:
    """The public resolver's answer: the lab's own addresses, NXDOMAIN for other names."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA
    if not query.question:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    address = zone.get(name)
    if address is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", address))
    return response.to_wire()


def injected_answer(query: dns.message.Message, blockpage_ip: str) -> bytes:
    """The censor's forged answer: the blockpage address, whatever the name's real one."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA
    question = query.question[0]
    if question.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", blockpage_ip))
    return response.to_wire()


class DnsServer:
    """A DNS server on UDP and TCP port 53 whose answers come from ``respond``."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._transports: list[asyncio.BaseTransport] = []
        self._servers: list[asyncio.base_events.Server] = []

    async def answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if not query.question:
            return None
        return await self.resolve(query)

    async def resolve(self, query: dns.message.Message) -> bytes | None:
        raise NotImplementedError

    async def start(self, namespaces: Namespaces, netns: str, address: str) -> None:
        loop = asyncio.get_running_loop()
        udp = namespaces.listener(netns, address, 53, socket.SOCK_DGRAM)
        server = self

        class _Udp(asyncio.DatagramProtocol):
            transport: Any = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                task = asyncio.ensure_future(self._reply(data, addr))
                server._tasks.add(task)
                task.add_done_callback(server._tasks.discard)

            async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
                wire = await server.answer(data)
                if wire is not None and not self.transport.is_closing():
                    self.transport.sendto(wire, addr)

        transport, _ = await loop.create_datagram_endpoint(_Udp, sock=udp)
        self._transports.append(transport)
        tcp = namespaces.listener(netns, address, 53)
        self._servers.append(await asyncio.start_server(self._tcp, sock=tcp))

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_IO_TIMEOUT_S):
                while True:
                    length = struct.unpack("!H", await reader.readexactly(2))[0]
                    wire = await self.answer(await reader.readexactly(length))
                    if wire is None:
                        break
                    writer.write(struct.pack("!H", len(wire)) + wire)
                    await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        for transport in self._transports:
            transport.close()
        for srv in self._servers:
            srv.close()
        for task in self._tasks:
            task.cancel()


class PublicResolver(DnsServer):
    """The lab internet's open resolver: it knows every site."""

    def __init__(self, plan: LabPlan) -> None:
        super().__init__()
        self.zone = {s.host: s.address for s in plan.sites}

    async def resolve(self, query: dns.message.Message) -> bytes | None:
        return zone_answer(query, self.zone)


class IspResolver(DnsServer):
    """An ISP's resolver: forged answers for the censored names (drawn per query at the
    method's rate), and for the rest the lab internet's answers, from the same zone the
    public resolver serves (asking it over the lab's links would only add latency)."""

    def __init__(self, plan: LabPlan, state: RouterState) -> None:
        super().__init__()
        self.zone = {s.host: s.address for s in plan.sites}
        self.state = state

    async def resolve(self, query: dns.message.Message) -> bytes | None:
        name = query.question[0].name.to_text(omit_final_dot=True).lower()
        if self.state.current.draw("dns_inject", name, self.state.rng):
            return injected_answer(query, self.state.blockpage_ip)
        return zone_answer(query, self.zone)


# --- the transparent HTTP proxy of a router ----------------------------------------------


def host_of(head: bytes) -> str | None:
    """The Host header of an HTTP/1 request head, lower-cased and without port."""
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"host":
            host = value.strip().decode("latin-1").lower()
            return host.rsplit(":", 1)[0] if not host.startswith("[") else host
    return None


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where a redirected connection was going (netfilter's SO_ORIGINAL_DST)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


class TransparentProxy:
    """Reads the Host of redirected HTTP requests: the blockpage for censored hosts,
    otherwise the request goes on to its original destination, from the router."""

    def __init__(self, namespaces: Namespaces, netns: str, state: RouterState) -> None:
        self.namespaces = namespaces
        self.netns = netns
        self.state = state
        self._server: asyncio.base_events.Server | None = None
        self._blockpage = iran_blockpage(state.blockpage_ip)

    async def start(self) -> None:
        sock = self.namespaces.listener(self.netns, "0.0.0.0", PROXY_PORT)
        self._server = await asyncio.start_server(self._handle, sock=sock)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def _forbidden(self) -> bytes:
        return (
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html; charset=windows-1256\r\n"
            + f"Content-Length: {len(self._blockpage)}\r\nConnection: close\r\n\r\n".encode()
            + self._blockpage
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            destination = original_destination(writer.get_extra_info("socket"))
            async with asyncio.timeout(_IO_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            host = host_of(head)
            if host is not None and self.state.current.draw("http_blockpage", host, self.state.rng):
                writer.write(self._forbidden())
                await writer.drain()
                return
            await self._pass_on(head, reader, writer, destination)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()

    async def _pass_on(
        self,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        destination: tuple[str, int],
    ) -> None:
        loop = asyncio.get_running_loop()
        upstream = self.namespaces.make_socket(self.netns)
        try:
            async with asyncio.timeout(_IO_TIMEOUT_S):
                await loop.sock_connect(upstream, destination)
        except (OSError, TimeoutError):
            upstream.close()
            return
        up_reader, up_writer = await asyncio.open_connection(sock=upstream)
        up_writer.write(head)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                if dst.can_write_eof():
                    dst.write_eof()

        try:
            async with asyncio.timeout(_IO_TIMEOUT_S * 3):
                await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        except TimeoutError:
            pass
        finally:
            up_writer.close()
