"""The TLS step: one handshake with the real SNI, and the handshakes that explain a failure.

The handshake is driven by hand over a plain socket (``ssl.MemoryBIO``) rather than by
asyncio's SSL transport, so that what the peer did is seen exactly: a reset is
``connection_reset``, a clean close is ``eof_error``, silence is a timeout, and a
certificate problem keeps OpenSSL's reason.

When the real-SNI handshake fails:
- on a certificate problem, a second, non-verifying handshake fetches the leaf so that its
  SHA-256 can be compared with the control's (a forged certificate differs);
- otherwise one handshake with an innocuous SNI goes to the same address: if it succeeds
  the filter looked at the name (SNI filtering), if it fails too the address is blocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from shared.probes.deadline import Deadline
from shared.probes.failures import PeerClosed, classify, wire
from shared.probes.tcp import open_socket
from shared.schema import TlsFacts

TLS_SHARE: Final = 0.25  # of the measurement's time, at most, for each handshake
_READ_SIZE: Final = 65536


@dataclass(frozen=True, slots=True)
class TlsContexts:
    """The verifying context (system roots plus an optional extra CA) and a lenient one."""

    verifying: ssl.SSLContext
    lenient: ssl.SSLContext


def _make_contexts(ca_file: Path | None) -> TlsContexts:
    verifying = ssl.create_default_context()
    if ca_file is not None:
        verifying.load_verify_locations(cafile=str(ca_file))
    verifying.set_alpn_protocols(["http/1.1"])
    lenient = ssl.create_default_context()
    lenient.check_hostname = False
    lenient.verify_mode = ssl.CERT_NONE
    lenient.set_alpn_protocols(["http/1.1"])
    return TlsContexts(verifying=verifying, lenient=lenient)


# One build per CA file, shared by every caller: the first measurements of a round start
# together, and each building its own contexts (the system roots, twice) cost tens of MB.
_BUILT: dict[Path | None, TlsContexts] = {}
_BUILDING: dict[tuple[int, Path | None], asyncio.Future[TlsContexts]] = {}


async def tls_contexts(ca_file: Path | None) -> TlsContexts:
    """The contexts for ``ca_file``, built once (in a thread: loading roots reads files)."""
    built = _BUILT.get(ca_file)
    if built is not None:
        return built
    key = (id(asyncio.get_running_loop()), ca_file)  # a future belongs to its loop
    building = _BUILDING.get(key)
    if building is None:
        building = asyncio.ensure_future(asyncio.to_thread(_make_contexts, ca_file))
        _BUILDING[key] = building
    try:
        built = await asyncio.shield(building)
    finally:
        if building.done():
            _BUILDING.pop(key, None)
    _BUILT[ca_file] = built
    return built


async def _drive(sock: socket.socket, ctx: ssl.SSLContext, sni: str | None) -> ssl.SSLObject:
    loop = asyncio.get_running_loop()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_side=False, server_hostname=sni)
    while True:
        try:
            tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        pending = outgoing.read()
        if pending:
            await loop.sock_sendall(sock, pending)
        if done:
            return tls
        data = await loop.sock_recv(sock, _READ_SIZE)
        if not data:
            raise PeerClosed()
        incoming.write(data)


@dataclass(frozen=True, slots=True)
class Handshake:
    """A completed handshake's facts."""

    version: str | None
    leaf_sha256: str | None


async def handshake(
    address: str, port: int, sni: str | None, ctx: ssl.SSLContext, until: float
) -> Handshake:
    """Connect and complete one TLS handshake by loop time ``until``; raises on failure."""
    async with asyncio.timeout_at(until):
        sock = await open_socket(address, port, until)
        try:
            tls = await _drive(sock, ctx, sni)
        finally:
            sock.close()
    leaf = tls.getpeercert(binary_form=True)
    return Handshake(
        version=tls.version(),
        leaf_sha256=hashlib.sha256(leaf).hexdigest() if leaf else None,
    )


async def probe_tls(
    address: str,
    port: int,
    sni: str,
    innocuous_sni: str,
    contexts: TlsContexts,
    deadline: Deadline,
) -> TlsFacts:
    """The TLS facts for ``sni`` at ``address:port``; see the module docstring."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    facts: TlsFacts = {
        "address": address,
        "sni": sni,
        "failure": None,
        "version": None,
        "cert_verified": False,
        "leaf_sha256": None,
        "innocuous_sni": None,
        "innocuous_failure": None,
    }
    try:
        done = await handshake(address, port, sni, contexts.verifying, deadline.step(TLS_SHARE))
    except ssl.SSLCertVerificationError as exc:
        facts["failure"] = wire(classify(exc))
        try:
            seen = await handshake(address, port, sni, contexts.lenient, deadline.step(TLS_SHARE))
        except (TimeoutError, OSError, EOFError, PeerClosed):
            pass  # the failure above already says what went wrong
        else:
            facts["version"] = seen.version
            facts["leaf_sha256"] = seen.leaf_sha256
    except (TimeoutError, OSError, EOFError, PeerClosed) as exc:  # ssl.SSLError is an OSError
        facts["failure"] = wire(classify(exc))
        facts["innocuous_sni"] = innocuous_sni
        try:
            await handshake(
                address, port, innocuous_sni, contexts.lenient, deadline.step(TLS_SHARE)
            )
        except (TimeoutError, OSError, EOFError, PeerClosed) as inner:
            facts["innocuous_failure"] = wire(classify(inner))
    else:
        facts["version"] = done.version
        facts["cert_verified"] = True
        facts["leaf_sha256"] = done.leaf_sha256
    facts["t_ms"] = round((loop.time() - started) * 1000, 3)
    return facts
