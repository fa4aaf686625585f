"""The DNS step: a direct UDP query with dnspython's wire format, and the system resolver.

The direct query goes to the resolver the system uses (the first ``nameserver`` of
``/etc/resolv.conf``) or a configured one, over our own UDP socket rather than a stub
library, so that after the first reply we can keep listening a little for LATE answers to
the same query id: two different answers to one question are the signature of on-path
injection (the injector is nearer than the resolver and wins the race).

Only A records are asked for: the TCP, TLS and HTTP steps then speak IPv4, like the
control, so the two sides are comparable.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from shared.probes.deadline import Deadline
from shared.probes.failures import classify, wire
from shared.schema import DnsFacts, Failure

RESOLV_CONF: Final = Path("/etc/resolv.conf")
DNS_SHARE: Final = 0.3  # of the measurement's time, at most
LATE_WINDOW_S: Final = 0.25  # how long to listen for a second answer after the first
_RETRIES: Final = 2  # UDP is lossy: the same query is sent again at most this often
MAX_ANSWERS: Final = 32  # the wire schema takes 64; no real site needs more than a few

_RCODE_FAILURES: Final = {
    dns.rcode.NXDOMAIN: Failure.DNS_NXDOMAIN_ERROR,
    dns.rcode.SERVFAIL: Failure.DNS_SERVFAIL_ERROR,
}


@dataclass(frozen=True, slots=True)
class Resolver:
    """Where the direct query goes, and whether the address came from the system."""

    ip: str
    port: int = 53
    from_system: bool = True

    @property
    def label(self) -> str:
        """What a result may say about the resolver: never a private (volunteer-side) address."""
        addr = ipaddress.ip_address(self.ip)
        if not addr.is_global:
            return "system" if self.from_system else "configured"
        host = f"[{self.ip}]" if addr.version == 6 else self.ip
        return self.ip if self.port == 53 else f"{host}:{self.port}"


def parse_resolver(text: str, *, from_system: bool = False) -> Resolver:
    """``"ip"``, ``"ip:port"`` or ``"[ipv6]:port"`` -> ``Resolver``; ValueError if malformed."""
    text = text.strip()
    host, port_text = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port_text = rest[1:] if rest.startswith(":") else "bad"
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        ipaddress.ip_address(host)  # a name will not do: the resolver must be an address
        port = int(port_text)
    except ValueError:
        raise ValueError(
            f"resolver {text!r}: expected an IP address, address:port or [IPv6 address]:port"
        ) from None
    if not 0 < port < 65536:
        raise ValueError(f"resolver {text!r}: port {port} is out of range")
    return Resolver(ip=host, port=port, from_system=from_system)


def _first_nameserver(path: Path) -> Resolver:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                # A scoped IPv6 nameserver (fe80::1%eth0) keeps its scope out of the address.
                return parse_resolver(parts[1].split("%", 1)[0], from_system=True)
            except ValueError:
                continue
    # What the C library does when resolv.conf names no server.
    return Resolver(ip="127.0.0.1", from_system=True)


async def system_resolver(path: Path = RESOLV_CONF) -> Resolver:
    """The first nameserver the system uses (read in a thread: it is a file)."""
    return await asyncio.to_thread(_first_nameserver, path)


async def choose_resolver(configured: str | None) -> Resolver:
    """The configured resolver, or the system's own."""
    if configured:
        return parse_resolver(configured)
    return await system_resolver()


@dataclass(slots=True)
class Exchange:
    """The outcome of one direct query."""

    answers: list[str] = field(default_factory=list)
    ttls: list[int] = field(default_factory=list)
    late_answers: list[str] = field(default_factory=list)
    rcode: str | None = None
    failure: Failure | None = None


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.items: asyncio.Queue[bytes | OSError] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.items.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for our query (port unreachable, no route): the resolver's answer.
        if isinstance(exc, OSError):
            self.items.put_nowait(exc)


def _addresses(msg: dns.message.Message) -> tuple[list[str], list[int]]:
    answers: list[str] = []
    ttls: list[int] = []
    for rrset in msg.answer:
        if rrset.rdtype == dns.rdatatype.A:
            for rdata in rrset:
                answers.append(rdata.address)
                ttls.append(rrset.ttl)
    return answers[:MAX_ANSWERS], ttls[:MAX_ANSWERS]


def _reply_to(query: dns.message.Message, data: bytes) -> dns.message.Message | None:
    try:
        reply = dns.message.from_wire(data)
    except (dns.exception.DNSException, ValueError):
        return None  # garbage on our port is not an answer
    return reply if query.is_response(reply) else None


async def query_a(
    name: str, resolver: Resolver, until: float, *, late_window_s: float = LATE_WINDOW_S
) -> Exchange:
    """Ask ``resolver`` for the A records of ``name`` over UDP, stopping at loop time ``until``.

    Network failures come back as ``Exchange.failure``; nothing but cancellation raises.
    """
    loop = asyncio.get_running_loop()
    query = dns.message.make_query(name, dns.rdatatype.A)
    wire = query.to_wire()
    out = Exchange()
    try:
        transport, inbox = await loop.create_datagram_endpoint(
            _Inbox, remote_addr=(resolver.ip, resolver.port)
        )
    except OSError as exc:
        out.failure = classify(exc)
        return out
    try:
        first = await _first_reply(transport, inbox, query, wire, until)
        out.rcode = dns.rcode.to_text(first.rcode())
        out.answers, out.ttls = _addresses(first)
        if first.rcode() in _RCODE_FAILURES:
            out.failure = _RCODE_FAILURES[first.rcode()]
        elif first.rcode() != dns.rcode.NOERROR:
            out.failure = Failure.UNKNOWN_FAILURE
        elif not out.answers:
            out.failure = Failure.DNS_NO_ANSWER
        if late_window_s > 0:
            out.late_answers = await _late_answers(
                inbox, query, set(out.answers), min(until, loop.time() + late_window_s)
            )
    except (TimeoutError, OSError) as exc:
        out.failure = classify(exc)
    finally:
        transport.close()
    return out


async def _first_reply(
    transport: asyncio.DatagramTransport,
    inbox: _Inbox,
    query: dns.message.Message,
    wire: bytes,
    until: float,
) -> dns.message.Message:
    loop = asyncio.get_running_loop()
    interval = max(0.05, (until - loop.time()) / (_RETRIES + 1))
    transport.sendto(wire)
    next_send = loop.time() + interval
    sent = 1
    while True:
        wake = min(until, next_send) if sent <= _RETRIES else until
        try:
            async with asyncio.timeout_at(wake):
                item = await inbox.items.get()
        except TimeoutError:
            if loop.time() >= until:
                raise
            transport.sendto(wire)
            sent += 1
            next_send = loop.time() + interval
            continue
        if isinstance(item, OSError):
            raise item
        reply = _reply_to(query, item)
        if reply is not None:
            return reply


async def _late_answers(
    inbox: _Inbox, query: dns.message.Message, first: set[str], until: float
) -> list[str]:
    late: list[str] = []
    while True:
        try:
            async with asyncio.timeout_at(until):
                item = await inbox.items.get()
        except TimeoutError:
            return late
        if isinstance(item, OSError):
            continue
        reply = _reply_to(query, item)
        if reply is None:
            continue
        answers, _ = _addresses(reply)
        # The same answer again (our own retransmission answered twice) is not evidence.
        if set(answers) != first:
            late.extend(a for a in answers if a not in late)
            del late[MAX_ANSWERS:]


async def system_lookup(host: str, port: int, until: float) -> tuple[list[str], Failure | None]:
    """IPv4 addresses for ``host`` from getaddrinfo (the system's resolver, hosts file...)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(until):
            infos = await loop.getaddrinfo(
                host, port, family=socket.AF_INET, type=socket.SOCK_STREAM
            )
    except (TimeoutError, OSError) as exc:
        return [], classify(exc)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        ip = str(sockaddr[0])
        if ip not in addresses and len(addresses) < MAX_ANSWERS:
            addresses.append(ip)
    return addresses, (None if addresses else Failure.DNS_NO_ANSWER)


async def resolve(
    host: str, port: int, resolver: Resolver, deadline: Deadline, *, use_system: bool
) -> DnsFacts:
    """The DNS facts for ``host``: the direct query and, if asked, getaddrinfo, side by side."""
    until = deadline.step(DNS_SHARE)
    async with asyncio.TaskGroup() as tg:
        direct_task = tg.create_task(query_a(host, resolver, until))
        system_task = tg.create_task(system_lookup(host, port, until)) if use_system else None
    exchange = direct_task.result()
    system = system_task.result() if system_task is not None else None
    facts: DnsFacts = {
        "resolver": resolver.label,
        "query": host,
        "answers": exchange.answers,
        "rcode": exchange.rcode,
        "ttls": exchange.ttls,
        "late_answers": exchange.late_answers,
        "bogon": False,
        "failure": wire(exchange.failure),
    }
    if system is not None:
        facts["system_answers"] = system[0]
        facts["system_failure"] = wire(system[1])
    return facts
