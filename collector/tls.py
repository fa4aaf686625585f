"""HTTPS served by the collector itself: ``listen.tls_cert`` and ``listen.tls_key`` (PEM).

TLS 1.2 is the oldest version offered. SIGHUP loads the files again into the same context,
so renewed certificates (certbot, an ACME client) take effect for new connections without
a restart; a pair that does not load leaves the old one in service.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from shared.errors import ConfigError


def server_context(cert: Path, key: Path, source: str = "<config>") -> ssl.SSLContext:
    """A server context for ``cert`` (chain, PEM) and ``key``; ConfigError naming the key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    load_pair(ctx, cert, key, source)
    return ctx


def load_pair(ctx: ssl.SSLContext, cert: Path, key: Path, source: str = "<config>") -> None:
    """Load (or reload) the certificate and key into ``ctx`` (the loader has checked that
    they exist; a renewal may still have removed or broken them)."""
    try:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            source, "listen.tls_cert", f"{cert} with key {key} does not load: {exc}"
        ) from None
