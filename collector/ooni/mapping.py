"""One OONI web_connectivity measurement -> one filterwatch export row. Pure: no I/O.

Every test version from 0.0.1 (Measurement Kit) to 0.5.x (probe-cli's LTE) carries the
same top-level keys (``probe_cc``, ``probe_asn``, ``input``, ``measurement_start_time``,
``report_id``) and the same ``test_keys`` used here (``blocking``, ``accessible``,
``queries``, ``tcp_connect``, ``requests``, ``control``, and since 0.4 ``tls_handshakes``);
where versions differ (body as text or base64, headers as a map or a list) both forms are
read. ``docs/ooni.md`` documents each column and the order of the verdict's questions.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from shared.blockpages import Fingerprint, Fingerprints
from shared.failures import map_failure
from shared.schema import Blocking

WEB_CONNECTIVITY: Final = "web_connectivity"
DEFAULT_PSEUDONYM_KEY: Final = b"filterwatch ooni import v1"
_TIME_RE: Final = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.\d+)?Z?$")
_ASN_RE: Final = re.compile(r"^AS(\d+)$", re.IGNORECASE)
_CC_RE: Final = re.compile(r"^[A-Z]{2}$")
_SSL_FAILURES: Final = frozenset(
    {"ssl_invalid_hostname", "ssl_unknown_authority", "ssl_failed_handshake"}
)


@dataclass(frozen=True, slots=True)
class Skip:
    """A document that is not imported, and why (a short reason, counted in the summary)."""

    reason: str


@dataclass(slots=True)
class Mapper:
    """Maps measurements with one fingerprint set and pseudonym key, counting as it goes."""

    fingerprints: Fingerprints
    pseudonym_key: bytes = DEFAULT_PSEUDONYM_KEY
    verdicts: Counter[str] = field(default_factory=Counter)
    fingerprints_elsewhere: int = 0
    _pseudonyms: dict[str, str] = field(default_factory=dict)

    def pseudonym(self, report_id: str) -> str:
        """The agent column: HMAC-SHA256 of the report id, 16 hex digits (as ours)."""
        known = self._pseudonyms.get(report_id)
        if known is None:
            digest = hmac.new(self.pseudonym_key, report_id.encode("utf-8"), hashlib.sha256)
            known = self._pseudonyms[report_id] = digest.hexdigest()[:16]
            if len(self._pseudonyms) > 100_000:
                self._pseudonyms.clear()  # a bound on memory; a miss costs one HMAC
        return known

    def row(self, doc: Any) -> dict[str, object] | Skip:
        """The export row of one measurement document, or why it is skipped."""
        if not isinstance(doc, dict):
            return Skip("not_a_measurement")
        tk = doc.get("test_keys")
        if not isinstance(tk, dict):
            return Skip("not_a_measurement")
        test_name = doc.get("test_name")
        if test_name != WEB_CONNECTIVITY:
            return Skip(f"test_name {test_name}" if isinstance(test_name, str) else "no_test_name")
        url = doc.get("input")
        if not isinstance(url, str) or not url:
            return Skip("no_input")
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return Skip("input_not_a_url")
        measured_at = _iso_time(doc.get("measurement_start_time"))
        if measured_at is None:
            return Skip("bad_measurement_start_time")
        report_id = doc.get("report_id")
        mid_source = str(report_id)
        if not isinstance(report_id, str) or not report_id:
            # No report (OONI's QA runs, a probe that never submitted): the run is told by
            # its software, network and start time; the measurement by its whole content.
            report_id = "|".join(
                str(doc.get(k)) for k in ("software_name", "probe_asn", "test_start_time")
            )
            mid_source = hashlib.sha256(msgspec.json.encode(doc)).hexdigest()
        cc, asn = _network(doc)
        answers = dns_answers(tk)
        http = _final_response(tk)
        judged = self.judge(tk, cc if asn is not None else None, answers, http)
        self.verdicts[judged.blocking.value] += 1
        if judged.elsewhere:
            self.fingerprints_elsewhere += 1
        return {
            "measurement_id": measurement_id(mid_source, url),
            "measured_at": measured_at,
            "cc": cc,
            "asn": asn,
            "network_name": _text(doc.get("probe_network_name")) if asn is not None else None,
            "agent": self.pseudonym(report_id),
            "url": url.strip(),
            "domain": parts.hostname.lower().rstrip("."),
            "blocking": judged.blocking.value,
            "accessible": judged.blocking.accessible,
            "failure": map_failure(judged.failure) if judged.failure else None,
            "blockpage": judged.blockpage,
            "dns_answers": answers or None,
            "http_status": http.status,
            "http_body_length": http.body_length,
            "control_ok": control_ok(tk),
            "failure_original": judged.failure,
        }

    def judge(
        self,
        tk: Mapping[str, Any],
        cc: str | None,
        answers: list[str] | None = None,
        http: Response | None = None,
    ) -> Judged:
        """Our verdict from OONI's facts, in the order docs/ooni.md gives."""
        if cc is None:
            return Judged(Blocking.INCONCLUSIVE, _any_failure(tk))
        if answers is None:
            answers = dns_answers(tk)
        if http is None:
            http = _final_response(tk)
        elsewhere = None
        for answer in answers:
            scan = self.fingerprints.scan_dns(answer, cc)
            if scan.counted is not None:
                return Judged(Blocking.DNS, _dns_failure(tk), scan.counted.name)
            elsewhere = elsewhere or scan.elsewhere
        ooni = tk.get("blocking")
        if http.status is not None:
            scan = self.fingerprints.scan_response(http.headers, http.body, cc)
            page: Fingerprint | None = scan.counted
            if page is not None and (not page.generic or ooni == "http-diff"):
                return Judged(Blocking.BLOCKPAGE, None, page.name)
            elsewhere = elsewhere or scan.elsewhere
        found = elsewhere.name if elsewhere is not None else None
        if _stray_bogon(tk, answers):
            return Judged(Blocking.DNS, _dns_failure(tk), None, found)
        blocking, failure = _from_ooni(tk, ooni, fetched=http.status is not None)
        return Judged(blocking, failure, None, found)


@dataclass(frozen=True, slots=True)
class Judged:
    blocking: Blocking
    failure: str | None  # OONI's own failure string (the row maps it onto ours)
    blockpage: str | None = None
    elsewhere: str | None = None  # a fingerprint of other countries matched (not counted)


@dataclass(frozen=True, slots=True)
class Response:
    status: int | None
    body_length: int | None
    body: bytes | None
    headers: list[tuple[str, str]]


def measurement_id(report_id: str, url: str) -> str:
    """A stable id: the same measurement imported twice, or from two of OONI's layouts,
    gets the same id, so ``compare`` keeps it once."""
    digest = hashlib.sha256(f"{report_id}\n{url.strip()}".encode()).hexdigest()
    return f"ooni-{digest[:32]}"


def _iso_time(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    match = _TIME_RE.match(value.strip())
    if match is None:
        return None
    return f"{match.group(1)}T{match.group(2)}.000000Z"


def _network(doc: Mapping[str, Any]) -> tuple[str | None, int | None]:
    cc = doc.get("probe_cc")
    asn_text = doc.get("probe_asn")
    match = _ASN_RE.match(asn_text) if isinstance(asn_text, str) else None
    asn = int(match.group(1)) if match else None
    if not isinstance(cc, str) or not _CC_RE.match(cc) or cc == "ZZ":
        return None, None
    if asn is None or asn == 0 or asn >= 2**32:
        return cc, None  # OONI's AS0: the network is not known
    return cc, asn


def _text(value: Any) -> str:
    return value[:256] if isinstance(value, str) else ""


def dns_answers(tk: Mapping[str, Any]) -> list[str]:
    """The A and AAAA answers of every query, in order, each once."""
    out: list[str] = []
    for query in tk.get("queries") or ():
        if not isinstance(query, dict):
            continue
        for answer in query.get("answers") or ():
            if not isinstance(answer, dict):
                continue
            value = answer.get("ipv4") or answer.get("ipv6")
            if isinstance(value, str) and value and value not in out:
                out.append(value)
    return out[:64]


def _control(tk: Mapping[str, Any]) -> Mapping[str, Any]:
    control = tk.get("control")
    return control if isinstance(control, dict) else {}


def control_ok(tk: Mapping[str, Any]) -> bool | None:
    """True: the control fetched the page; False: it failed; None: there was no control."""
    control = _control(tk)
    if tk.get("control_failure"):
        return False
    http = control.get("http_request")
    if not isinstance(http, dict):
        return None
    status = http.get("status_code")
    return http.get("failure") is None and isinstance(status, int) and status > 0


def _control_addresses(tk: Mapping[str, Any]) -> set[str] | None:
    dns = _control(tk).get("dns")
    if not isinstance(dns, dict):
        return None
    return {a for a in dns.get("addrs") or () if isinstance(a, str)}


@functools.lru_cache(maxsize=65536)
def _is_global(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return True


def _stray_bogon(tk: Mapping[str, Any], answers: list[str]) -> bool:
    """A private or reserved answer the control did not get (the agent's rule, too)."""
    theirs = _control_addresses(tk)
    if theirs is None:
        return False
    return any(not _is_global(a) and a not in theirs for a in answers)


def _dns_failure(tk: Mapping[str, Any]) -> str | None:
    failure = tk.get("dns_experiment_failure")
    if isinstance(failure, str):
        return failure
    for query in tk.get("queries") or ():
        if isinstance(query, dict) and isinstance(query.get("failure"), str):
            return str(query["failure"])
    return None


def _tcp_failure(tk: Mapping[str, Any]) -> str | None:
    for entry in tk.get("tcp_connect") or ():
        status = entry.get("status") if isinstance(entry, dict) else None
        if isinstance(status, dict) and isinstance(status.get("failure"), str):
            return str(status["failure"])
    return None


def _tls_failure(tk: Mapping[str, Any]) -> str | None:
    """The failure of the TLS handshakes with the real name, when none succeeded."""
    handshakes = [
        h
        for h in tk.get("tls_handshakes") or ()
        if isinstance(h, dict) and not h.get("no_tls_verify")
    ]
    if handshakes:
        if any(h.get("failure") is None for h in handshakes):
            return None
        failure = handshakes[0].get("failure")
        return failure if isinstance(failure, str) else None
    failure = tk.get("http_experiment_failure")
    if isinstance(failure, str) and map_failure(failure) in _SSL_FAILURES:
        return failure  # versions before 0.4 record no handshakes: the request's failure
    return None


def _http_failure(tk: Mapping[str, Any]) -> str | None:
    failure = tk.get("http_experiment_failure")
    if isinstance(failure, str):
        return failure
    requests = tk.get("requests") or ()
    if requests and isinstance(requests[0], dict) and isinstance(requests[0].get("failure"), str):
        return str(requests[0]["failure"])
    return None


def _any_failure(tk: Mapping[str, Any]) -> str | None:
    return _http_failure(tk) or _tcp_failure(tk) or _dns_failure(tk)


def _control_failed(tk: Mapping[str, Any]) -> bool:
    return control_ok(tk) is False


def _from_ooni(tk: Mapping[str, Any], ooni: Any, *, fetched: bool) -> tuple[Blocking, str | None]:
    """OONI's own verdict in ours (docs/ooni.md, "blocking")."""
    if ooni == "dns":
        return Blocking.DNS, _dns_failure(tk)
    if ooni == "tcp_ip":
        return Blocking.TCP_IP, _tcp_failure(tk) or _http_failure(tk)
    if ooni == "http-failure":
        tls = _tls_failure(tk)
        if tls is not None:
            return Blocking.TLS, tls
        return Blocking.HTTP_FAILURE, _http_failure(tk)
    if ooni == "http-diff":
        return Blocking.HTTP_DIFF, None
    accessible = tk.get("accessible")
    if ooni is False:
        if accessible is True:
            return Blocking.OK, None
        return Blocking.SITE_DOWN, _any_failure(tk)  # OONI: false and not accessible = down
    # null: OONI could not tell (the control failed, or the probe and it disagree). Both
    # failing is a site down; a page only the probe got has nothing to be compared with.
    failure = _any_failure(tk)
    if failure is not None and not fetched and _control_failed(tk):
        return Blocking.SITE_DOWN, failure
    return Blocking.INCONCLUSIVE, failure


def _final_response(tk: Mapping[str, Any]) -> Response:
    """The last response of the redirect chain (OONI lists the newest request first)."""
    requests = tk.get("requests") or ()
    first = requests[0] if requests and isinstance(requests[0], dict) else None
    response = first.get("response") if first else None
    if not isinstance(response, dict):
        return Response(None, None, None, [])
    code = response.get("code")
    body = _body(response.get("body"))
    if not isinstance(code, int) or code <= 0:
        if body is None:
            return Response(None, None, None, [])
        code = None  # Measurement Kit recorded bodies without a status code at times
    return Response(
        status=code,
        body_length=len(body) if body is not None else None,
        body=body,
        headers=_headers(response),
    )


def _body(value: Any) -> bytes | None:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, dict) and value.get("format") == "base64":
        try:
            return base64.b64decode(str(value.get("data") or ""), validate=False)
        except (binascii.Error, ValueError):
            return None
    return None


def _headers(response: Mapping[str, Any]) -> list[tuple[str, str]]:
    listed = response.get("headers_list")
    if isinstance(listed, list):
        return [
            (str(pair[0]), str(pair[1]))
            for pair in listed
            if isinstance(pair, list) and len(pair) == 2
        ]
    headers = response.get("headers")
    if isinstance(headers, dict):
        return [(str(k), str(v)) for k, v in headers.items()]
    return []
