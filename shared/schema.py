"""The wire schema, version 1: a measurement, its facts, and the batch that carries them.

The schema is documented for third parties in ``docs/wire-format.md``. Records travel as
msgpack maps (see ``shared.codec``). Validation is hand-written and table-driven: it checks
every field that filterwatch reads, tolerates fields it does not know (so that newer
agents can talk to older collectors) and names the first field that is wrong.

Nested facts (DNS, TCP, TLS, HTTP, control) stay plain, validated dicts: building a
dataclass for every nested map costs more than the ingest path can afford, and the
collector stores the full record as it came.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, TypedDict

from shared.errors import SchemaError

SCHEMA_VERSION: Final = 1

MAX_RESULTS_PER_BATCH: Final = 5000
MAX_ID_LENGTH: Final = 64
MAX_URL_LENGTH: Final = 2048
_ID_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_CC_RE: Final = re.compile(r"^[A-Z]{2}$")


class Blocking(StrEnum):
    """Why a measurement was, or was not, judged accessible (design.md section 4)."""

    OK = "ok"
    DNS = "dns"
    TCP_IP = "tcp_ip"
    TLS = "tls"
    HTTP_FAILURE = "http_failure"
    HTTP_DIFF = "http_diff"
    BLOCKPAGE = "blockpage"
    SITE_DOWN = "site_down"
    INCONCLUSIVE = "inconclusive"

    @property
    def accessible(self) -> bool | None:
        """The ``accessible`` value that goes with this verdict."""
        if self is Blocking.OK:
            return True
        if self in (Blocking.SITE_DOWN, Blocking.INCONCLUSIVE):
            return None
        return False


class Failure(StrEnum):
    """The closed vocabulary of network failures, in the style of OONI's."""

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


BLOCKING_VALUES: Final = frozenset(b.value for b in Blocking)
FAILURE_VALUES: Final = frozenset(f.value for f in Failure)


class NetworkFacts(TypedDict):
    asn: int
    cc: str
    network_name: str


class DnsFacts(TypedDict, total=False):
    resolver: str | None  # "system", or a resolver address that is not a private one
    query: str
    answers: list[str]  # A/AAAA answers of the direct UDP query, in order
    rcode: str | None  # "NOERROR", "NXDOMAIN", ...
    ttls: list[int]
    late_answers: list[str]  # answers that arrived after the first reply to the same query
    system_answers: list[str]  # getaddrinfo's answers
    system_failure: str | None
    bogon: bool  # an answer is a known bogon or private address
    failure: str | None


class TcpFacts(TypedDict, total=False):
    address: str
    port: int
    failure: str | None
    t_ms: float


class TlsFacts(TypedDict, total=False):
    address: str
    sni: str
    failure: str | None
    version: str | None
    cert_verified: bool
    leaf_sha256: str | None
    innocuous_sni: str | None
    innocuous_failure: str | None  # the handshake with the innocuous SNI, when it was tried
    t_ms: float


class HttpFacts(TypedDict, total=False):
    url: str  # the final URL after redirects
    status: int | None
    body_length: int | None
    body_sha256: str | None
    title: str | None
    headers: dict[str, str]  # headers of note, lower-cased names
    redirects: int
    failure: str | None
    body_truncated: bool


class ControlFacts(TypedDict, total=False):
    dns: DnsFacts | None
    tcp: list[TcpFacts]
    tls: TlsFacts | None
    http: HttpFacts | None
    failure: str | None  # the control itself could not be had


@dataclass(frozen=True, slots=True)
class Measurement:
    """One target URL measured once from one agent on one network."""

    id: str
    measured_at: float  # UTC, seconds since the epoch
    url: str
    domain: str
    blocking: Blocking
    accessible: bool | None
    network: NetworkFacts | None = None
    failure: str | None = None
    blockpage: str | None = None
    clock_age_s: float | None = None  # seconds since the clock was confirmed by the collector
    dns: DnsFacts | None = None
    tcp: list[TcpFacts] = field(default_factory=list)
    tls: TlsFacts | None = None
    http: HttpFacts | None = None
    control: ControlFacts | None = None
    timings: dict[str, float] = field(default_factory=dict)
    agent_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fields this version does not know

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-ready map for this measurement."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            id=self.id,
            measured_at=self.measured_at,
            url=self.url,
            domain=self.domain,
            blocking=self.blocking.value,
            accessible=self.accessible,
            network=self.network,
            failure=self.failure,
            blockpage=self.blockpage,
            clock_age_s=self.clock_age_s,
            dns=self.dns,
            tcp=self.tcp,
            tls=self.tls,
            http=self.http,
            control=self.control,
            timings=self.timings,
            agent_version=self.agent_version,
        )
        return out


@dataclass(frozen=True, slots=True)
class Batch:
    """What an agent uploads: some of its measurements, under one batch id."""

    agent_id: str
    batch_id: str
    results: list[Measurement]
    schema_version: int = SCHEMA_VERSION

    def to_wire(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "agent_id": self.agent_id,
            "batch_id": self.batch_id,
            "results": [m.to_wire() for m in self.results],
        }


@dataclass(frozen=True, slots=True)
class RawBatch:
    """A batch whose envelope is valid; its results are still to be checked one by one."""

    agent_id: str
    batch_id: str
    schema_version: int
    results: list[Any]


# --- validation -----------------------------------------------------------------------

_Check = Callable[[Any, str], None]


def _type_name(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bytes):
        return "binary"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__


def _fail(path: str, expected: str, value: Any) -> SchemaError:
    return SchemaError(path, f"expected {expected}, got {_type_name(value)}")


def _str(limit: int) -> _Check:
    def check(value: Any, path: str) -> None:
        if type(value) is not str:
            raise _fail(path, "a string", value)
        if len(value) > limit:
            raise SchemaError(path, f"longer than {limit} characters")

    return check


def _opt(check: _Check) -> _Check:
    def opt_check(value: Any, path: str) -> None:
        if value is not None:
            check(value, path)

    return opt_check


def _int(value: Any, path: str) -> None:
    if type(value) is not int:
        raise _fail(path, "an integer", value)


def _number(value: Any, path: str) -> None:
    t = type(value)
    if t is float:
        if not math.isfinite(value):
            raise SchemaError(path, "expected a finite number")
    elif t is not int:
        raise _fail(path, "a number", value)


def _bool(value: Any, path: str) -> None:
    if type(value) is not bool:
        raise _fail(path, "a boolean", value)


def _failure(value: Any, path: str) -> None:
    if value is None:
        return
    if type(value) is not str:
        raise _fail(path, "a failure string or nil", value)
    if value not in FAILURE_VALUES:
        raise SchemaError(path, f"unknown failure {value[:40]!r}")


def _list_of(check: _Check, limit: int) -> _Check:
    def list_check(value: Any, path: str) -> None:
        if type(value) is not list:
            raise _fail(path, "an array", value)
        if len(value) > limit:
            raise SchemaError(path, f"more than {limit} items")
        for i, item in enumerate(value):
            check(item, f"{path}[{i}]")

    return list_check


def _map_of_str(limit: int) -> _Check:
    def map_check(value: Any, path: str) -> None:
        if type(value) is not dict:
            raise _fail(path, "a map", value)
        if len(value) > limit:
            raise SchemaError(path, f"more than {limit} entries")
        for k, v in value.items():
            if type(k) is not str or type(v) is not str or len(v) > 4096:
                raise SchemaError(f"{path}.{k}", "expected a string of at most 4096 characters")

    return map_check


def _map_of_number(value: Any, path: str) -> None:
    if type(value) is not dict:
        raise _fail(path, "a map", value)
    for k, v in value.items():
        _number(v, f"{path}.{k}")


def _record(fields: Mapping[str, _Check]) -> _Check:
    """A check for a map whose known fields are all optional; unknown fields are tolerated."""
    items = tuple(fields.items())

    def record_check(value: Any, path: str) -> None:
        if type(value) is not dict:
            raise _fail(path, "a map", value)
        for name, check in items:
            v = value.get(name)
            if v is not None:
                check(v, f"{path}.{name}")

    return record_check


_addr = _str(64)
_short = _str(256)

_DNS = _record(
    {
        "resolver": _short,
        "query": _short,
        "answers": _list_of(_addr, 64),
        "rcode": _str(16),
        "ttls": _list_of(_int, 64),
        "late_answers": _list_of(_addr, 64),
        "system_answers": _list_of(_addr, 64),
        "system_failure": _failure,
        "bogon": _bool,
        "failure": _failure,
    }
)
_TCP = _record({"address": _addr, "port": _int, "failure": _failure, "t_ms": _number})
_TLS = _record(
    {
        "address": _addr,
        "sni": _short,
        "failure": _failure,
        "version": _str(32),
        "cert_verified": _bool,
        "leaf_sha256": _str(64),
        "innocuous_sni": _short,
        "innocuous_failure": _failure,
        "t_ms": _number,
    }
)
_HTTP = _record(
    {
        "url": _str(MAX_URL_LENGTH),
        "status": _int,
        "body_length": _int,
        "body_sha256": _str(64),
        "title": _str(1024),
        "headers": _map_of_str(64),
        "redirects": _int,
        "failure": _failure,
        "body_truncated": _bool,
    }
)
_TCP_LIST = _list_of(_TCP, 64)
_CONTROL = _record(
    {"dns": _DNS, "tcp": _TCP_LIST, "tls": _TLS, "http": _HTTP, "failure": _failure}
)


def _network(value: Any, path: str) -> NetworkFacts:
    if type(value) is not dict:
        raise _fail(path, "a map or nil", value)
    asn = value.get("asn")
    if type(asn) is not int or not 0 <= asn < 2**32:
        raise SchemaError(f"{path}.asn", "expected an AS number (integer 0..4294967295)")
    cc = value.get("cc")
    if type(cc) is not str or not _CC_RE.match(cc):
        raise SchemaError(f"{path}.cc", "expected a two-letter upper-case country code")
    name = value.get("network_name", "")
    if type(name) is not str or len(name) > 256:
        raise SchemaError(f"{path}.network_name", "expected a string")
    return {"asn": asn, "cc": cc, "network_name": name}


_KNOWN_FIELDS: Final = frozenset(
    {
        "id",
        "measured_at",
        "url",
        "domain",
        "blocking",
        "accessible",
        "network",
        "failure",
        "blockpage",
        "clock_age_s",
        "dns",
        "tcp",
        "tls",
        "http",
        "control",
        "timings",
        "agent_version",
    }
)
_OPTIONAL_CHECKS: Final[tuple[tuple[str, _Check], ...]] = (
    ("failure", _failure),
    ("blockpage", _str(128)),
    ("clock_age_s", _number),
    ("dns", _DNS),
    ("tcp", _TCP_LIST),
    ("tls", _TLS),
    ("http", _HTTP),
    ("control", _CONTROL),
    ("timings", _map_of_number),
    ("agent_version", _str(64)),
)


def _required(record: Mapping[str, Any], name: str) -> Any:
    try:
        return record[name]
    except KeyError:
        raise SchemaError(name, "required field is missing") from None


def measurement_from_wire(record: Any) -> Measurement:
    """Validate one decoded measurement map and return it typed.

    Raises ``SchemaError`` naming the first field that is missing or of the wrong type.
    """
    if type(record) is not dict:
        raise _fail("", "a map", record)
    mid = _required(record, "id")
    if type(mid) is not str or not _ID_RE.match(mid):
        raise SchemaError("id", "expected 1-64 characters of [A-Za-z0-9_.:-]")
    measured_at = _required(record, "measured_at")
    _number(measured_at, "measured_at")
    url = _required(record, "url")
    _str(MAX_URL_LENGTH)(url, "url")
    domain = _required(record, "domain")
    _str(253)(domain, "domain")
    blocking = _required(record, "blocking")
    if type(blocking) is not str or blocking not in BLOCKING_VALUES:
        raise SchemaError("blocking", f"expected one of {', '.join(sorted(BLOCKING_VALUES))}")
    accessible = record.get("accessible")
    if accessible is not None and type(accessible) is not bool:
        raise _fail("accessible", "a boolean or nil", accessible)
    verdict = Blocking(blocking)
    if accessible != verdict.accessible:
        raise SchemaError("accessible", f"must be {verdict.accessible} when blocking is {blocking}")
    network_raw = record.get("network")
    network = None if network_raw is None else _network(network_raw, "network")
    get = record.get
    for name, check in _OPTIONAL_CHECKS:
        value = get(name)
        if value is not None:
            check(value, name)
    extra = {k: v for k, v in record.items() if k not in _KNOWN_FIELDS}
    return Measurement(
        id=mid,
        measured_at=float(measured_at),
        url=url,
        domain=domain,
        blocking=verdict,
        accessible=accessible,
        network=network,
        failure=get("failure"),
        blockpage=get("blockpage"),
        clock_age_s=None if get("clock_age_s") is None else float(get("clock_age_s")),
        dns=get("dns"),
        tcp=get("tcp") or [],
        tls=get("tls"),
        http=get("http"),
        control=get("control"),
        timings=get("timings") or {},
        agent_version=get("agent_version"),
        extra=extra,
    )


def batch_envelope_from_wire(doc: Any) -> RawBatch:
    """Validate a decoded batch's envelope; its results are validated one by one later.

    Raises ``SchemaError`` for a wrong schema version or a malformed envelope: the whole
    batch is refused. A bad result inside a good envelope costs only that result.
    """
    if type(doc) is not dict:
        raise _fail("", "a map (the batch)", doc)
    version = _required(doc, "schema_version")
    if type(version) is not int:
        raise _fail("schema_version", "an integer", version)
    if version != SCHEMA_VERSION:
        raise SchemaError(
            "schema_version", f"version {version} is not supported (this collector speaks 1)"
        )
    agent_id = _required(doc, "agent_id")
    if type(agent_id) is not str or not _ID_RE.match(agent_id):
        raise SchemaError("agent_id", "expected 1-64 characters of [A-Za-z0-9_.:-]")
    batch_id = _required(doc, "batch_id")
    if type(batch_id) is not str or not _ID_RE.match(batch_id):
        raise SchemaError("batch_id", "expected 1-64 characters of [A-Za-z0-9_.:-]")
    results = _required(doc, "results")
    if type(results) is not list:
        raise _fail("results", "an array", results)
    if len(results) > MAX_RESULTS_PER_BATCH:
        raise SchemaError("results", f"more than {MAX_RESULTS_PER_BATCH} results in one batch")
    return RawBatch(agent_id=agent_id, batch_id=batch_id, schema_version=version, results=results)


def batch_from_wire(doc: Any) -> Batch:
    """Validate a whole batch strictly: any bad result is an error (used by tools and tests)."""
    env = batch_envelope_from_wire(doc)
    results = []
    for i, raw in enumerate(env.results):
        try:
            results.append(measurement_from_wire(raw))
        except SchemaError as exc:
            raise SchemaError(f"results[{i}].{exc.field}".rstrip("."), exc.problem) from None
    return Batch(agent_id=env.agent_id, batch_id=env.batch_id, results=results)
