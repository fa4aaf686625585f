"""Small pure pieces of the probes: resolver parsing, the failure mapping, options."""

from __future__ import annotations

import errno
import socket
import ssl

import pytest

from shared.probes.dns import parse_resolver
from shared.probes.failures import PeerClosed, classify
from shared.probes.http import recorded_headers, title_of
from shared.probes.web import ProbeOptions, parse_target
from shared.schema import Failure


@pytest.mark.parametrize(
    ("text", "ip", "port"),
    [
        ("192.0.2.53", "192.0.2.53", 53),
        ("127.0.0.1:5353", "127.0.0.1", 5353),
        ("[::1]:53", "::1", 53),
        ("2001:db8::1", "2001:db8::1", 53),
    ],
)
def test_resolver_addresses_parse(text: str, ip: str, port: int) -> None:
    """A resolver is an address with an optional port, IPv6 in brackets when it has one."""
    r = parse_resolver(text)
    assert (r.ip, r.port) == (ip, port)


@pytest.mark.parametrize("text", ["dns.example", "127.0.0.1:dns", "127.0.0.1:0", "[::1]x"])
def test_bad_resolvers_are_refused_with_their_text(text: str) -> None:
    """A name, a bad port or stray characters are refused, and the message quotes the value."""
    with pytest.raises(ValueError, match="resolver"):
        parse_resolver(text)


def test_resolver_label_hides_private_addresses() -> None:
    """Only a public resolver's address is recorded; a private one is named by its role."""
    assert parse_resolver("8.8.4.4").label == "8.8.4.4"
    assert parse_resolver("9.9.9.9:5353").label == "9.9.9.9:5353"
    assert parse_resolver("192.168.1.1").label == "configured"
    assert parse_resolver("127.0.0.53", from_system=True).label == "system"


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Failure.CONNECTION_REFUSED),
        (ConnectionResetError(errno.ECONNRESET, "reset"), Failure.CONNECTION_RESET),
        (TimeoutError(), Failure.GENERIC_TIMEOUT_ERROR),
        (OSError(errno.ETIMEDOUT, "timed out"), Failure.GENERIC_TIMEOUT_ERROR),
        (OSError(errno.EHOSTUNREACH, "no route"), Failure.HOST_UNREACHABLE),
        (OSError(errno.ENETUNREACH, "unreachable"), Failure.NETWORK_UNREACHABLE),
        (PeerClosed(), Failure.EOF_ERROR),
        (ssl.SSLEOFError(8, "EOF"), Failure.EOF_ERROR),
        (ssl.SSLError(1, "tlsv1 alert"), Failure.SSL_FAILED_HANDSHAKE),
        (socket.gaierror(socket.EAI_NONAME, "no name"), Failure.DNS_NXDOMAIN_ERROR),
        (socket.gaierror(socket.EAI_AGAIN, "again"), Failure.DNS_SERVFAIL_ERROR),
        (OSError(errno.EIO, "io"), Failure.UNKNOWN_FAILURE),
        (ValueError("odd"), Failure.UNKNOWN_FAILURE),
    ],
)
def test_exceptions_map_to_the_closed_vocabulary(exc: BaseException, failure: Failure) -> None:
    """Each kind of socket, TLS and resolver error has its failure string."""
    assert classify(exc) is failure


def test_certificate_errors_keep_their_reason() -> None:
    """OpenSSL's verify codes say hostname mismatch or unknown authority."""
    mismatch = ssl.SSLCertVerificationError(1, "verify failed")
    mismatch.verify_code = 62
    unknown = ssl.SSLCertVerificationError(1, "verify failed")
    unknown.verify_code = 20
    expired = ssl.SSLCertVerificationError(1, "verify failed")
    expired.verify_code = 10
    assert classify(mismatch) is Failure.SSL_INVALID_HOSTNAME
    assert classify(unknown) is Failure.SSL_UNKNOWN_AUTHORITY
    assert classify(expired) is Failure.SSL_FAILED_HANDSHAKE


def test_targets_must_be_http_urls_with_a_host() -> None:
    """Only http(s) URLs with a host are measured; IP literals are recognised."""
    t = parse_target("HTTPS://Blocked.Test.:8443/path")
    assert (t.scheme, t.host, t.port, t.ip_literal) == ("https", "blocked.test", 8443, None)
    assert parse_target("http://[::1]/").ip_literal == "::1"
    for bad in ("ftp://x.test/", "http:///", "not a url"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_probe_options_refuse_a_bad_resolver() -> None:
    """A malformed resolver in the options is refused when they are made, not mid-round."""
    with pytest.raises(ValueError, match="resolver"):
        ProbeOptions(resolver="resolver.example")


def test_recorded_headers_drop_client_addresses_and_secrets() -> None:
    """Headers that echo the client are dropped and addresses elsewhere are scrubbed."""
    kept = recorded_headers(
        [
            ("X-Forwarded-For", "203.0.113.9"),
            ("Set-Cookie", "session=secret"),
            ("Via", "1.1 proxy (seen from 203.0.113.9)"),
            ("Date", "today"),
            ("X-Odd", "yes"),
        ]
    )
    assert kept == {"via": "1.1 proxy (seen from <addr>)", "x-odd": "yes"}


def test_titles_are_folded_decoded_and_scrubbed() -> None:
    """The title's whitespace is folded, entities decoded, and addresses scrubbed."""
    body = b"<html><TITLE>\n Blocked &amp; logged:\n 198.51.100.7 </title>"
    assert title_of(body, "utf-8") == "Blocked & logged: <addr>"
