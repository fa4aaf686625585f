"""Other tools' failure names mapped onto filterwatch's closed vocabulary.

OONI's probes (ooniprobe-legacy, Measurement Kit, probe-cli) name the same outcomes in
several ways over the years: ``connection_refused_error``, ``dns_lookup_error``,
``ssl_invalid_certificate``, ``unknown_failure: <detail>``, Python's ``[Errno 111]
Connection refused``... ``map_failure`` gives the value of ``shared.schema.Failure`` that
means the same (``unknown_failure`` when nothing does); callers keep the original string
beside it (``failure_original``), so nothing a third party said is lost.
"""

from __future__ import annotations

import functools
import re
from enum import StrEnum
from typing import Final


class Failure(StrEnum):
    """The closed vocabulary of network failures, in the style of OONI's (``shared.schema``
    exports it with the rest of the measurement's types)."""

    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_RESET = "connection_reset"
    GENERIC_TIMEOUT_ERROR = "generic_timeout_error"
    EOF_ERROR = "eof_error"
    DNS_NXDOMAIN_ERROR = "dns_nxdomain_error"
    DNS_SERVFAIL_ERROR = "dns_servfail_error"
    DNS_NO_ANSWER = "dns_no_answer"
    SSL_INVALID_HOSTNAME = "ssl_invalid_hostname"
    SSL_UNKNOWN_AUTHORITY = "ssl_unknown_authority"
    SSL_FAILED_HANDSHAKE = "ssl_failed_handshake"
    HOST_UNREACHABLE = "host_unreachable"
    NETWORK_UNREACHABLE = "network_unreachable"
    UNKNOWN_FAILURE = "unknown_failure"


OURS: Final = frozenset(f.value for f in Failure)

# Names (the part before any ":" detail, lower case) and what they mean in ours.
_NAMES: Final[dict[str, Failure]] = {
    # TCP
    "connection_refused_error": Failure.CONNECTION_REFUSED,
    "econnrefused": Failure.CONNECTION_REFUSED,
    "connection_reset_error": Failure.CONNECTION_RESET,
    "connection_lost_error": Failure.CONNECTION_RESET,
    "connection_aborted": Failure.CONNECTION_RESET,
    "connection_aborted_error": Failure.CONNECTION_RESET,
    "connection_already_closed": Failure.CONNECTION_RESET,
    "econnreset": Failure.CONNECTION_RESET,
    "broken_pipe": Failure.CONNECTION_RESET,
    # time-outs
    "deferred_timeout_error": Failure.GENERIC_TIMEOUT_ERROR,
    "task_timed_out": Failure.GENERIC_TIMEOUT_ERROR,
    "timed_out": Failure.GENERIC_TIMEOUT_ERROR,
    "timeout": Failure.GENERIC_TIMEOUT_ERROR,
    "etimedout": Failure.GENERIC_TIMEOUT_ERROR,
    "response_never_received": Failure.GENERIC_TIMEOUT_ERROR,
    "ssl_handshake_timeout": Failure.GENERIC_TIMEOUT_ERROR,
    # end of file
    "eof": Failure.EOF_ERROR,
    "connection_closed": Failure.EOF_ERROR,
    # DNS
    "dns_nxdomain": Failure.DNS_NXDOMAIN_ERROR,
    "dns_name_error": Failure.DNS_NXDOMAIN_ERROR,
    "dns_lookup_error": Failure.DNS_SERVFAIL_ERROR,  # legacy: the lookup failed, cause unknown
    "dns_server_misbehaving": Failure.DNS_SERVFAIL_ERROR,
    "dns_servfail": Failure.DNS_SERVFAIL_ERROR,
    "dns_refused_error": Failure.DNS_SERVFAIL_ERROR,
    "dns_temporary_failure": Failure.DNS_SERVFAIL_ERROR,
    "dns_non_recoverable_failure": Failure.DNS_SERVFAIL_ERROR,
    "dns_reply_with_wrong_query_id": Failure.DNS_SERVFAIL_ERROR,
    "dns_duplicate_response": Failure.DNS_SERVFAIL_ERROR,
    "dns_no_answer_error": Failure.DNS_NO_ANSWER,
    "dns_bogon_error": Failure.DNS_NO_ANSWER,  # only bogon answers: nothing usable came back
    "android_dns_cache_no_data": Failure.DNS_NO_ANSWER,
    # TLS
    "ssl_invalid_certificate": Failure.SSL_FAILED_HANDSHAKE,  # expired, revoked, bad signature
    "ssl_error": Failure.SSL_FAILED_HANDSHAKE,
    "tls_handshake_error": Failure.SSL_FAILED_HANDSHAKE,
    "ssl_wrong_version_number": Failure.SSL_FAILED_HANDSHAKE,
    "certificate_verify_failed": Failure.SSL_UNKNOWN_AUTHORITY,
    # routes
    "no_route_to_host": Failure.HOST_UNREACHABLE,
    "ehostunreach": Failure.HOST_UNREACHABLE,
    "network_down": Failure.NETWORK_UNREACHABLE,
    "network_is_unreachable": Failure.NETWORK_UNREACHABLE,
    "enetunreach": Failure.NETWORK_UNREACHABLE,
    "address_family_not_supported": Failure.NETWORK_UNREACHABLE,  # no IPv6 on this host
    "address_family_not_supported_error": Failure.NETWORK_UNREACHABLE,
}

# Linux errno numbers in "[Errno N] ..." (ooniprobe-legacy wrote Python's messages).
_ERRNOS: Final[dict[int, Failure]] = {
    32: Failure.CONNECTION_RESET,
    101: Failure.NETWORK_UNREACHABLE,
    103: Failure.CONNECTION_RESET,
    104: Failure.CONNECTION_RESET,
    110: Failure.GENERIC_TIMEOUT_ERROR,
    111: Failure.CONNECTION_REFUSED,
    113: Failure.HOST_UNREACHABLE,
}
_ERRNO_RE: Final = re.compile(r"\[errno (\d+)\]")
_NAME_RE: Final = re.compile(r"^[a-z0-9_]+")


@functools.lru_cache(maxsize=4096)
def map_failure(text: str) -> str:
    """The value of our vocabulary that means what ``text`` (any tool's name) means."""
    if text in OURS:
        return text
    lowered = text.strip().lower()
    head = _NAME_RE.match(lowered)
    name = head.group(0) if head else ""
    if name in OURS:
        return name  # "connection_reset: read tcp ...": our name with a detail
    if "certificate verify failed" in lowered:
        return Failure.SSL_UNKNOWN_AUTHORITY  # OpenSSL's words for a chain it does not trust
    found = _NAMES.get(name)
    if found is not None:
        return found
    errno = _ERRNO_RE.search(lowered)
    if errno is not None:
        return _ERRNOS.get(int(errno.group(1)), Failure.UNKNOWN_FAILURE)
    if "timed out" in lowered or "timeout" in lowered:
        return Failure.GENERIC_TIMEOUT_ERROR
    if "connection refused" in lowered:
        return Failure.CONNECTION_REFUSED
    if "connection reset" in lowered:
        return Failure.CONNECTION_RESET
    return Failure.UNKNOWN_FAILURE


def mapped(text: str | None) -> tuple[str | None, str | None]:
    """``(ours, original)``: original is None when ``text`` was already ours (or None)."""
    if text is None:
        return None, None
    ours = map_failure(text)
    return ours, (None if ours == text else text)
