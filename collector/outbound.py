"""The one check for every connection the collector makes on someone else's behalf.

The control (``POST /api/v1/control``) measures URLs that agents send, and webhooks POST
to URLs that analysts configure. Either could turn the collector into a proxy into its own
network (the metadata service at 169.254.169.254, a database on 127.0.0.1, the LAN) or a
port scanner. Every destination is therefore checked here, by address and by port, before
a packet is sent to it:

- ``check_address`` refuses every range of the IANA IPv4 and IPv6 special-purpose address
  registries (an explicit table, not Python's ``is_global``, which calls the 6to4 form of
  loopback global), multicast, the reserved and unassigned space, and the forms that embed an
  IPv4 address (IPv4-mapped and -compatible, NAT64, 6to4, Teredo), whose embedded address is
  checked and named. ``allow_ranges`` lets configured ranges through (the lab, an intranet).
- ``check_port`` allows 80 and 443 and the ports listed (``control.allow_ports``).
- ``resolve_checked`` resolves a name and refuses it when ANY of its addresses is refused (a
  name with one private answer among public ones is a rebinding attempt, not a web site),
  returning the checked addresses to connect to.

The connection must then go to exactly those addresses, never to a second lookup's answer,
or a DNS server that answers "public" to the check and "127.0.0.1" to the connect defeats it.

How the control uses it: its probes resolve the name themselves (the DNS facts are part of
its answer) and hand each host's address list, for the first request and for every redirect
hop, to ``vet_addresses`` before connecting; the HTTP step connects through a resolver pinned
to the vetted addresses. A refused destination is ``400 destination_not_allowed``.

How a webhook sender should use it: make its session with ``checked_session`` (or a
``ClientSession(connector=checked_connector(...), trust_env=False)``), send with
``allow_redirects=False`` and treat ``DestinationRefused`` as a permanent delivery failure::

    async with checked_session(allow_ranges=config.alerts.allow_networks,
                               allow_ports=ANY_PORT) as session:
        try:
            async with session.post(url, data=body, allow_redirects=False) as resp: ...
        except DestinationRefused as exc:
            ...  # record exc.detail; never retry

``checked_connector`` resolves through ``CheckedResolver`` (every address of a name checked
before aiohttp sees any of them, so aiohttp connects only to checked addresses) and creates
every socket through a factory that checks the address and port once more: aiohttp connects
to an IP literal in a URL without asking any resolver, and that path is covered too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from shared.errors import FilterwatchError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

WEB_PORTS: Final = frozenset({80, 443})


class _AnyPort(frozenset[int]):
    """Every port: for destinations an operator configured by hand (webhook URLs)."""

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and 0 < port < 65536


ANY_PORT: Final = _AnyPort()


class DestinationRefused(FilterwatchError):
    """The collector does not connect to that destination."""

    def __init__(self, destination: str, reason: str) -> None:
        super().__init__(f"{destination} {reason}")
        self.destination = destination
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SpecialRange:
    network: Network
    name: str


def _table(rows: Sequence[tuple[str, str]]) -> tuple[SpecialRange, ...]:
    return tuple(SpecialRange(ipaddress.ip_network(cidr), name) for cidr, name in rows)


# The IANA IPv4 Special-Purpose Address Registry (RFC 6890 and its updates), every entry,
# including those the registry marks globally reachable (AS112, AMT, the anycast services in
# 192.0.0.0/24): none of them is a web site or a webhook receiver. Then the rest of the space
# that is not unicast: multicast and the reserved 240/4.
IPV4_SPECIAL: Final = _table(
    [
        ("0.0.0.0/8", '"this network"'),
        ("10.0.0.0/8", "private use"),
        ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link local (cloud metadata services)"),
        ("172.16.0.0/12", "private use"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation (TEST-NET-1)"),
        ("192.31.196.0/24", "AS112-v4"),
        ("192.52.193.0/24", "AMT"),
        ("192.88.99.0/24", "deprecated 6to4 relay anycast"),
        ("192.168.0.0/16", "private use"),
        ("192.175.48.0/24", "direct delegation AS112 service"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation (TEST-NET-2)"),
        ("203.0.113.0/24", "documentation (TEST-NET-3)"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "limited broadcast"),
        ("240.0.0.0/4", "reserved"),
    ]
)

# The IANA IPv6 Special-Purpose Address Registry, every entry, and the space outside the
# global unicast 2000::/3. The forms that embed an IPv4 address come first and are handled
# by ``_embedded``: their embedded address is what the packet finally reaches.
IPV6_SPECIAL: Final = _table(
    [
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b::/96", "NAT64 well-known prefix"),
        ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"),
        ("100::/64", "discard only"),
        ("100:0:0:1::/64", "dummy IPv6 prefix"),
        ("2001::/32", "Teredo"),
        ("2001:2::/48", "benchmarking"),
        ("2001::/23", "IETF protocol assignments"),
        ("2001:db8::/32", "documentation"),
        ("2002::/16", "6to4"),
        ("2620:4f:8000::/48", "direct delegation AS112 service"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing (SRv6) SIDs"),
        ("fc00::/7", "unique local"),
        ("fe80::/10", "link local"),
        ("fec0::/10", "site local (deprecated)"),
        ("ff00::/8", "multicast"),
    ]
)
_GLOBAL_UNICAST_V6: Final = ipaddress.IPv6Network("2000::/3")
_NAT64_WELL_KNOWN: Final = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 form carries, with the form's name, or None."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64_WELL_KNOWN:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        server, client = ip.teredo
        # The client is where the tunnel ends; a special server is named first.
        return "Teredo", server if _why_v4(server) is not None else client
    if int(ip) >> 32 == 0 and int(ip) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip))
    return None


def _special(ip: IpAddress) -> SpecialRange | None:
    table = IPV4_SPECIAL if ip.version == 4 else IPV6_SPECIAL
    for row in table:
        if ip in row.network:
            return row
    return None


def _allowed(ip: IpAddress, allow_ranges: Sequence[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in allow_ranges)


def _why_v4(ip: ipaddress.IPv4Address) -> str | None:
    row = _special(ip)
    if row is not None:
        return f"is in {row.network} ({row.name})"
    if not ip.is_global:  # a belt to the table's braces, should the registry grow
        return "is not a globally reachable address"
    return None


def check_address(ip: IpAddress, allow_ranges: Sequence[Network] = ()) -> None:
    """Raise ``DestinationRefused`` unless the collector may connect to ``ip``.

    An address inside ``allow_ranges`` is always allowed. An IPv4-mapped address is the
    IPv4 address it maps; the other forms that embed an IPv4 address are refused, naming the
    embedded address when that one is special too, except NAT64's well-known prefix, which
    reaches the embedded address and is judged by it.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if _allowed(ip, allow_ranges):
        return
    if isinstance(ip, ipaddress.IPv4Address):
        why = _why_v4(ip)
        if why is not None:
            raise DestinationRefused(str(ip), why)
        return
    embedded = _embedded(ip)
    if embedded is not None:
        form, inner = embedded
        inner_why = None if _allowed(inner, allow_ranges) else _why_v4(inner)
        if inner_why is not None:
            raise DestinationRefused(str(ip), f"is the {form} form of {inner}, which {inner_why}")
        if ip in _NAT64_WELL_KNOWN:
            return
    row = _special(ip)
    if row is not None:
        raise DestinationRefused(str(ip), f"is in {row.network} ({row.name})")
    if ip not in _GLOBAL_UNICAST_V6:
        raise DestinationRefused(str(ip), f"is outside {_GLOBAL_UNICAST_V6} (global unicast)")


def refusal(address: str, allow_ranges: Sequence[Network] = ()) -> DestinationRefused | None:
    """The refusal of a textual address (``"2002:7f00:1::"``), or None when it is allowed."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return DestinationRefused(repr(address)[:80], "is not an IP address")
    if "%" in address:
        return DestinationRefused(address[:80], "carries a zone index (a link-local scope)")
    try:
        check_address(ip, allow_ranges)
    except DestinationRefused as exc:
        return exc
    return None


def check_port(port: int, allow_ports: Collection[int] = ()) -> None:
    """Raise ``DestinationRefused`` unless ``port`` is 80, 443 or one of ``allow_ports``."""
    if not 0 < port < 65536:
        raise DestinationRefused(f"port {port}", "is not a TCP port")
    if port not in WEB_PORTS and port not in allow_ports:
        listed = ", ".join(str(p) for p in sorted(WEB_PORTS | set(allow_ports)))
        raise DestinationRefused(
            f"port {port}", f"is not a web port (allowed: {listed}; see control.allow_ports)"
        )


def vet_addresses(
    addresses: Sequence[str],
    port: int,
    *,
    allow_ranges: Sequence[Network] = (),
    allow_ports: Collection[int] = (),
) -> list[str]:
    """``addresses`` unchanged when all of them and ``port`` may be connected to;
    ``DestinationRefused`` for the first one that may not."""
    check_port(port, allow_ports)
    for address in addresses:
        refused = refusal(address, allow_ranges)
        if refused is not None:
            raise refused
    return list(addresses)


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def resolve_checked(
    host: str,
    port: int,
    *,
    allow_ranges: Sequence[Network] = (),
    allow_ports: Collection[int] = ANY_PORT,
    resolver: AbstractResolver | None = None,
    family: socket.AddressFamily = socket.AF_UNSPEC,
) -> list[IpAddress]:
    """The addresses of ``host`` to connect to on ``port``, every one checked.

    Refuses (``DestinationRefused``) when the port is refused or ANY address the name
    resolves to is; connect only to the returned addresses. ``resolver`` defaults to
    aiohttp's threaded resolver (getaddrinfo). DNS failures are ``OSError`` as usual.
    """
    check_port(port, allow_ports)
    literal = _literal(host)
    if literal is not None:
        check_address(literal, allow_ranges)
        return [literal]
    own = resolver is None
    active = resolver or aiohttp.ThreadedResolver()
    try:
        answers = await active.resolve(host, port, family)
    finally:
        if own:
            await active.close()
    addresses: list[IpAddress] = []
    for answer in answers:
        address = answer["host"]
        refused = refusal(address, allow_ranges)
        if refused is not None:
            raise DestinationRefused(
                host[:253], f"resolves to {refused.destination}, which {refused.reason}"
            )
        ip = ipaddress.ip_address(address)
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise OSError(f"{host[:253]} has no address")
    return addresses


class CheckedResolver(AbstractResolver):
    """An aiohttp resolver whose answers are all checked: a name with any refused address
    raises ``DestinationRefused`` and aiohttp never sees its addresses."""

    def __init__(
        self,
        allow_ranges: Sequence[Network] = (),
        allow_ports: Collection[int] = ANY_PORT,
        inner: AbstractResolver | None = None,
    ) -> None:
        self.allow_ranges = tuple(allow_ranges)
        self.allow_ports = allow_ports
        self.inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await resolve_checked(
            host,
            port,
            allow_ranges=self.allow_ranges,
            allow_ports=self.allow_ports,
            resolver=self.inner,
            family=family,
        )
        return [
            ResolveResult(
                hostname=host,
                host=str(ip),
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in addresses
        ]

    async def close(self) -> None:
        await self.inner.close()


def checked_socket_factory(
    allow_ranges: Sequence[Network] = (), allow_ports: Collection[int] = ANY_PORT
) -> aiohttp.connector.SocketFactoryType:
    """A socket factory for aiohttp's connector that checks each destination at the last
    moment before the socket exists (IP literals in URLs never reach a resolver)."""
    ranges = tuple(allow_ranges)

    def make(addr_info: aiohttp.connector.AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address, port = str(sockaddr[0]), int(sockaddr[1])
        check_port(port, allow_ports)
        refused = refusal(address, ranges)
        if refused is not None:
            raise refused
        return socket.socket(family=family, type=type_, proto=proto)

    return make


def checked_connector(
    *,
    allow_ranges: Sequence[Network] = (),
    allow_ports: Collection[int] = ANY_PORT,
    resolver: AbstractResolver | None = None,
    **kwargs: object,
) -> aiohttp.TCPConnector:
    """An aiohttp connector that connects only to checked destinations (other keyword
    arguments go to ``TCPConnector``: ``ssl``, ``limit``...)."""
    return aiohttp.TCPConnector(
        resolver=CheckedResolver(allow_ranges, allow_ports, resolver),
        socket_factory=checked_socket_factory(allow_ranges, allow_ports),
        use_dns_cache=False,
        **kwargs,  # type: ignore[arg-type]
    )


def checked_session(
    *,
    allow_ranges: Sequence[Network] = (),
    allow_ports: Collection[int] = ANY_PORT,
    resolver: AbstractResolver | None = None,
    timeout: aiohttp.ClientTimeout | None = None,
    **connector_args: object,
) -> aiohttp.ClientSession:
    """A ClientSession that reaches only checked destinations: no proxy from the environment
    (a proxy would make the connection, unchecked), every socket checked."""
    return aiohttp.ClientSession(
        connector=checked_connector(
            allow_ranges=allow_ranges, allow_ports=allow_ports, resolver=resolver, **connector_args
        ),
        trust_env=False,
        timeout=timeout or aiohttp.ClientTimeout(total=30),
    )


__all__ = [
    "ANY_PORT",
    "IPV4_SPECIAL",
    "IPV6_SPECIAL",
    "WEB_PORTS",
    "CheckedResolver",
    "DestinationRefused",
    "check_address",
    "check_port",
    "checked_connector",
    "checked_session",
    "checked_socket_factory",
    "refusal",
    "resolve_checked",
    "vet_addresses",
]
