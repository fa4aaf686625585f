"""Foreign exceptions at the I/O edge, turned into the closed failure vocabulary.

Probes never let a network outcome escape as an exception: each step catches what the
socket, ssl and dns layers raise and stores ``classify(exc)`` on its facts. The mapping
follows OONI's names (design.md section 4); anything it does not recognise is
``unknown_failure`` rather than a guess.
"""

from __future__ import annotations

import errno
import socket
import ssl
from typing import Any, Final

from shared.schema import Failure

# OpenSSL's X509_V_ERR_* codes (see openssl/x509_vfy.h) that mean "I do not trust who
# signed this": the chain does not end at a trusted root.
_UNKNOWN_AUTHORITY_CODES: Final = frozenset(
    {
        2,  # unable to get issuer certificate
        18,  # self-signed leaf
        19,  # self-signed certificate in chain
        20,  # unable to get local issuer certificate
        21,  # unable to verify the first certificate
    }
)
_HOSTNAME_MISMATCH_CODE: Final = 62  # X509_V_ERR_HOSTNAME_MISMATCH
_IP_MISMATCH_CODE: Final = 64  # X509_V_ERR_IP_ADDRESS_MISMATCH

_ERRNO_FAILURES: Final = {
    errno.ECONNREFUSED: Failure.CONNECTION_REFUSED,
    errno.ECONNRESET: Failure.CONNECTION_RESET,
    errno.ECONNABORTED: Failure.CONNECTION_RESET,
    errno.EPIPE: Failure.CONNECTION_RESET,
    errno.ETIMEDOUT: Failure.GENERIC_TIMEOUT_ERROR,
    errno.EHOSTUNREACH: Failure.HOST_UNREACHABLE,
    errno.EHOSTDOWN: Failure.HOST_UNREACHABLE,
    errno.ENETUNREACH: Failure.NETWORK_UNREACHABLE,
    errno.ENETDOWN: Failure.NETWORK_UNREACHABLE,
    errno.EADDRNOTAVAIL: Failure.NETWORK_UNREACHABLE,
}

# getaddrinfo's EAI_* codes. glibc answers EAI_AGAIN both for SERVFAIL and for a
# resolver that does not answer; either way the name could not be had for now.
_GAI_FAILURES: Final = {
    socket.EAI_NONAME: Failure.DNS_NXDOMAIN_ERROR,
    socket.EAI_AGAIN: Failure.DNS_SERVFAIL_ERROR,
    socket.EAI_FAIL: Failure.DNS_SERVFAIL_ERROR,
}
_EAI_NODATA: Final = getattr(socket, "EAI_NODATA", None)
if _EAI_NODATA is not None:
    _GAI_FAILURES[_EAI_NODATA] = Failure.DNS_NO_ANSWER
_EAI_ADDRFAMILY: Final = getattr(socket, "EAI_ADDRFAMILY", None)
if _EAI_ADDRFAMILY is not None:
    _GAI_FAILURES[_EAI_ADDRFAMILY] = Failure.DNS_NO_ANSWER


class PeerClosed(Exception):
    """The peer closed the connection (end of file) before the step was done."""


def classify_ssl(exc: ssl.SSLError) -> Failure:
    """The failure for an error of the TLS layer."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code in (_HOSTNAME_MISMATCH_CODE, _IP_MISMATCH_CODE):
            return Failure.SSL_INVALID_HOSTNAME
        if code in _UNKNOWN_AUTHORITY_CODES:
            return Failure.SSL_UNKNOWN_AUTHORITY
        return Failure.SSL_FAILED_HANDSHAKE
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return Failure.EOF_ERROR
    return Failure.SSL_FAILED_HANDSHAKE


def classify(exc: BaseException) -> Failure:
    """The failure string for an exception raised by a network step.

    Callers catch ``Exception`` (never ``BaseException``: cancellation must go through) and
    store what this returns.
    """
    if isinstance(exc, TimeoutError):
        return Failure.GENERIC_TIMEOUT_ERROR
    if isinstance(exc, PeerClosed | EOFError):
        return Failure.EOF_ERROR
    if isinstance(exc, ssl.SSLError):
        return classify_ssl(exc)
    if isinstance(exc, socket.gaierror):
        return _GAI_FAILURES.get(exc.errno or 0, Failure.UNKNOWN_FAILURE)
    if isinstance(exc, ConnectionRefusedError):
        return Failure.CONNECTION_REFUSED
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return Failure.CONNECTION_RESET
    if isinstance(exc, OSError) and exc.errno is not None:
        return _ERRNO_FAILURES.get(exc.errno, Failure.UNKNOWN_FAILURE)
    return Failure.UNKNOWN_FAILURE


def wire(failure: Failure | None) -> Any:
    """``failure`` as facts store it: a plain string, or None.

    Typed ``Any`` because the facts' TypedDicts spell the vocabulary as their own literal
    type; ``Failure`` is the one source of its values.
    """
    return None if failure is None else failure.value
