"""From the facts of a measurement and of its control, the verdict. Pure: no I/O.

The order of the questions is design.md section 4's: no control or no network identity,
or the agent's own connectivity failed -> inconclusive; the control failed too ->
site_down; a known blockpage -> blockpage; DNS inconsistent with the control -> dns; every
connect failed where the control's worked -> tcp_ip; the handshake with the real SNI
failed where the control's worked -> tls (or tcp_ip when a handshake with an innocuous
name fails the same way: then the address, not the name, is blocked); the request failed
-> http_failure; the response differs from the control's -> http_diff; otherwise ok.

The HTTP comparison follows OONI's Web Connectivity: the responses agree when the status
codes match and at least one of body length (proportion > 0.7), uncommon headers and
title words agrees.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from shared.blockpages import Fingerprint, Fingerprints, Scan
from shared.probes.headers import COMMON_SERVER_HEADERS
from shared.schema import (
    Blocking,
    ControlFacts,
    DnsFacts,
    Failure,
    HttpFacts,
    NetworkFacts,
)

BODY_PROPORTION_THRESHOLD: Final = 0.7
TITLE_WORD_MIN: Final = 5  # OONI ignores shorter words: too many are shared by chance
# Framing headers say how a body travels, not who sent it: they prove nothing.
_FRAMING_HEADERS: Final = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive"}
)
_OWN_NETWORK_DOWN: Final = frozenset({Failure.NETWORK_UNREACHABLE.value})
_OWN_RESOLVER_DOWN: Final = frozenset(
    {Failure.NETWORK_UNREACHABLE.value, Failure.HOST_UNREACHABLE.value}
)
_ADDRESS_BLOCKED: Final = frozenset(
    {
        Failure.CONNECTION_RESET.value,
        Failure.GENERIC_TIMEOUT_ERROR.value,
        Failure.EOF_ERROR.value,
    }
)
_DEFINITE_DNS_FAILURES: Final = frozenset(
    {Failure.DNS_NXDOMAIN_ERROR.value, Failure.DNS_NO_ANSWER.value}
)


@dataclass(frozen=True, slots=True)
class Assessment:
    """A verdict, the failure that decided it, the matched fingerprint, and why, in words."""

    blocking: Blocking
    failure: str | None
    blockpage: str | None
    reason: str
    # A fingerprint that matched but is a blockpage only in other countries (not counted),
    # and where it matched: "http" or "dns".
    elsewhere: str | None = None
    elsewhere_in: str | None = None


@dataclass(frozen=True, slots=True)
class HttpComparison:
    """OONI's four comparisons of a response with the control's (None: not decidable)."""

    same_body: bool
    status_match: bool | None
    body_proportion: float | None
    headers_match: bool | None
    title_match: bool | None

    @property
    def body_match(self) -> bool | None:
        if self.body_proportion is None:
            return None
        return self.body_proportion > BODY_PROPORTION_THRESHOLD

    @property
    def consistent(self) -> bool:
        if self.same_body:
            return True
        if self.status_match is False:
            return False
        return any(m is True for m in (self.body_match, self.headers_match, self.title_match))


def _is_global(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return True  # a name (CNAME) is not an address we could call private


def dns_answers(dns: DnsFacts | None) -> list[str]:
    """Every address the DNS step produced: the direct query's, then the system's."""
    if not dns:
        return []
    out = list(dns.get("answers") or [])
    out.extend(a for a in dns.get("system_answers") or [] if a not in out)
    return out


def dns_scan(dns: DnsFacts | None, fingerprints: Fingerprints, cc: str | None) -> Scan:
    """What the DNS answers match for an agent in ``cc``: the first counted blockpage, else
    the first that counts only elsewhere."""
    elsewhere = None
    for answer in dns_answers(dns):
        scan = fingerprints.scan_dns(answer, cc)
        if scan.counted is not None:
            return scan
        elsewhere = elsewhere or scan
    return elsewhere or Scan()


def dns_fingerprint(
    dns: DnsFacts | None, fingerprints: Fingerprints, cc: str | None = None
) -> Fingerprint | None:
    """The blockpage fingerprint any DNS answer matches (in ``cc``; None: anywhere)."""
    return dns_scan(dns, fingerprints, cc).counted


def dns_bogon(
    dns: DnsFacts | None, control: ControlFacts | None, fingerprints: Fingerprints
) -> bool:
    """Whether an answer is a known injection address, or a non-public address the control
    did not get (test servers and labs live on private addresses the control shares)."""
    if dns_fingerprint(dns, fingerprints) is not None:
        return True
    control_dns = control.get("dns") if control else None
    if not control_dns:
        return False
    theirs = set(dns_answers(control_dns))
    return any(not _is_global(a) and a not in theirs for a in dns_answers(dns))


def _title_match(title: str | None, control_title: str | None) -> bool | None:
    if not title or not control_title:
        return None
    control_words = control_title.split(" ")
    for i, word in enumerate(title.split(" ")):
        if len(word) < TITLE_WORD_MIN:
            continue
        # OONI compares the first long word with the control's word at the same place.
        return i < len(control_words) and control_words[i].lower() == word.lower()
    return None


def _headers_match(headers: Iterable[str], control_headers: Iterable[str]) -> bool:
    ours = set(headers) - _FRAMING_HEADERS
    theirs = set(control_headers) - _FRAMING_HEADERS
    if ours == theirs:
        return True
    return bool((ours - COMMON_SERVER_HEADERS) & (theirs - COMMON_SERVER_HEADERS))


def compare_http(http: HttpFacts, control_http: HttpFacts) -> HttpComparison:
    """Compare a fetched response with the control's."""
    status, control_status = http.get("status"), control_http.get("status")
    # A control that got a server error says nothing about what the status should be.
    status_match = None if (control_status or 0) >= 500 else status == control_status
    proportion = None
    if not (http.get("body_truncated") or control_http.get("body_truncated")):
        a, b = http.get("body_length") or 0, control_http.get("body_length") or 0
        proportion = 1.0 if max(a, b) == 0 else min(a, b) / max(a, b)
    sha = http.get("body_sha256")
    return HttpComparison(
        same_body=sha is not None and sha == control_http.get("body_sha256"),
        status_match=status_match,
        body_proportion=proportion,
        headers_match=_headers_match(
            (http.get("headers") or {}).keys(), (control_http.get("headers") or {}).keys()
        ),
        title_match=_title_match(http.get("title"), control_http.get("title")),
    )


def fetched(facts: ControlFacts) -> bool:
    """Whether these facts end with an HTTP response."""
    http = facts.get("http")
    return facts.get("failure") is None and http is not None and http.get("status") is not None


def own_connectivity_failed(facts: ControlFacts) -> bool:
    """Whether the failures point at the agent's own network rather than at the site:
    the resolver or every address is unreachable from here."""
    dns = facts.get("dns")
    if dns and dns.get("failure") in _OWN_RESOLVER_DOWN and not dns_answers(dns):
        return True
    tcp = facts.get("tcp") or []
    return bool(tcp) and all(t.get("failure") in _OWN_NETWORK_DOWN for t in tcp)


def _dns_inconsistency(
    facts: ControlFacts, control: ControlFacts, fingerprints: Fingerprints, cc: str | None
) -> str | None:
    dns, control_dns = facts.get("dns"), control.get("dns")
    if not dns or not control_dns:
        return None  # an IP-literal URL: no DNS to compare
    ours = dns_answers(dns)
    theirs = set(dns_answers(control_dns))
    known = dns_fingerprint(dns, fingerprints, cc)
    if known is not None:
        return f"an answer is a known injection address (fingerprint {known.name})"
    if not ours:
        failure = dns.get("failure") or dns.get("system_failure") or "no answer"
        return f"the resolver answered {failure} where the control got addresses"
    if dns.get("system_failure") in _DEFINITE_DNS_FAILURES:
        said = dns.get("system_failure")
        return f"the system resolver answered {said} where the control got addresses"
    strays = [a for a in ours if not _is_global(a) and a not in theirs]
    if strays:
        return f"answer {strays[0]} is a non-public address the control did not get"
    if theirs and not set(ours) & theirs:
        # Sites behind CDNs answer differently from place to place; a certificate that
        # verifies, or a page that matches the control's, proves the addresses genuine.
        tls = facts.get("tls")
        if tls and tls.get("cert_verified"):
            return None
        http, control_http = facts.get("http"), control.get("http")
        if http and control_http and fetched(facts) and compare_http(http, control_http).consistent:
            return None
        late = " (and a second, late answer arrived: injection)" if dns.get("late_answers") else ""
        return f"no answer is shared with the control's and nothing proves them genuine{late}"
    return None


def _differs_from_control(facts: ControlFacts, control: ControlFacts | None) -> bool:
    """Whether the page fetched differs from the control's (False when nothing to compare)."""
    http = facts.get("http")
    control_http = control.get("http") if control else None
    if not http or not control or not control_http or not fetched(control):
        return False
    return not compare_http(http, control_http).consistent


def assess(
    facts: ControlFacts,
    control: ControlFacts | None,
    network: NetworkFacts | None,
    fingerprints: Fingerprints,
    *,
    headers: Sequence[tuple[str, str]] | None = None,
    body: bytes | None = None,
) -> Assessment:
    """The verdict with its reason. ``headers`` and ``body`` are the final response's raw
    headers and (capped) body when the caller still has them; without them the recorded
    headers are matched against the fingerprints."""
    if headers is None:
        http_facts = facts.get("http")
        headers = list((http_facts.get("headers") or {}).items()) if http_facts else []
    cc = network["cc"] if network else None
    scan = fingerprints.scan_response(headers, body, cc) if fetched(facts) else Scan()
    page = scan.counted
    if page is not None and page.generic and not _differs_from_control(facts, control):
        page = None  # "Access Denied" on a page like the control's is the site's own
    dns_found = dns_scan(facts.get("dns"), fingerprints, cc)
    dns_fp = dns_found.counted
    blockpage = page.name if page else (dns_fp.name if dns_fp else None)
    elsewhere = where = None
    if blockpage is None and (scan.elsewhere or dns_found.elsewhere):
        other = scan.elsewhere or dns_found.elsewhere
        elsewhere, where = (other.name if other else None), ("http" if scan.elsewhere else "dns")
    failure = facts.get("failure")

    def verdict(blocking: Blocking, why: str, fail: str | None = failure) -> Assessment:
        return Assessment(blocking, fail, blockpage, why, elsewhere, where)

    if network is None:
        return verdict(Blocking.INCONCLUSIVE, "the network this was measured on is not known")
    if control is None:
        return verdict(Blocking.INCONCLUSIVE, "there is no control measurement to compare with")
    if own_connectivity_failed(facts):
        return verdict(Blocking.INCONCLUSIVE, "this machine's own network connection failed")
    if not fetched(control):
        if not fetched(facts):
            why = "the site failed from the control's vantage too"
            return verdict(Blocking.SITE_DOWN, why)
        if page is not None:
            return verdict(Blocking.BLOCKPAGE, f"the page is a known blockpage ({page.name})", None)
        why = "the control failed but this network got a page: there is nothing to compare it with"
        return verdict(Blocking.INCONCLUSIVE, why)
    if page is not None:
        return verdict(Blocking.BLOCKPAGE, f"the page is a known blockpage ({page.name})", None)
    dns_problem = _dns_inconsistency(facts, control, fingerprints, cc)
    if dns_problem is not None:
        dns = facts.get("dns") or {}
        return verdict(
            Blocking.DNS, f"DNS disagrees with the control: {dns_problem}", dns.get("failure")
        )
    tcp = facts.get("tcp") or []
    if tcp and all(t.get("failure") for t in tcp):
        why = "every connection failed where the control's succeeded"
        return verdict(Blocking.TCP_IP, why, tcp[0].get("failure"))
    tls = facts.get("tls")
    if tls and tls.get("failure"):
        if tls.get("innocuous_failure") in _ADDRESS_BLOCKED:
            why = (
                "the TLS handshake failed with the real name and with an innocuous one: "
                "the address is blocked, whatever the name"
            )
            return verdict(Blocking.TCP_IP, why, tls.get("failure"))
        if tls.get("innocuous_sni") and tls.get("innocuous_failure") is None:
            why = (
                "the TLS handshake failed with the real name but succeeded with an "
                "innocuous one: the filter reads the SNI"
            )
        else:
            why = "the TLS handshake failed where the control's succeeded"
        return verdict(Blocking.TLS, why, tls.get("failure"))
    http = facts.get("http")
    if http is None or http.get("failure") or http.get("status") is None:
        fail = (http or {}).get("failure") or failure or Failure.UNKNOWN_FAILURE.value
        return verdict(
            Blocking.HTTP_FAILURE, "the request failed where the control's succeeded", fail
        )
    control_http = control.get("http") or {}
    comparison = compare_http(http, control_http)
    if not comparison.consistent:
        return verdict(Blocking.HTTP_DIFF, "the response differs from the control's", None)
    return verdict(Blocking.OK, "the page was fetched and agrees with the control's", None)
