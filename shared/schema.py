"""The wire schema, version 1: a measurement, its facts, and the batch that carries them.

The schema is documented for third parties in ``docs/wire-format.md``. Records travel as
msgpack maps. The types below are the schema: their annotations carry every limit
(``Annotated[str, Meta(max_length=...)]``) and ``msgspec`` decodes and validates a record
against them in one pass in C, several times faster than decoding first and walking the
result in Python (see ``bench/ingest``). Fields this version does not know are tolerated
(newer agents can talk to older collectors); a missing or wrongly typed field is a
``SchemaError`` that names it, e.g. ``http.status: expected `int | null`, got `str```.

Nested facts (DNS, TCP, TLS, HTTP, control) stay plain, validated dicts (TypedDicts): the
collector stores them as they came and reads only a few of their fields.
"""

from __future__ import annotations

import random
import re
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Final, TypedDict

import msgspec
from msgspec import Meta

from shared.errors import CodecError, SchemaError
from shared.failures import Failure as Failure  # one of the measurement's types
from shared.failures import mapped
from shared.wire_rules import check_record, check_top_level_keys, split_array, split_map

SCHEMA_VERSION: Final = 1

MAX_RESULTS_PER_BATCH: Final = 5000
MAX_URL_LENGTH: Final = 2048
_ID_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_CC_RE: Final = re.compile(r"^[A-Z]{2}$")


def new_measurement_id(at: float | None = None, rng: random.Random | None = None) -> str:
    """A new measurement id: 32 hex digits laid out like a UUIDv7 (RFC 9562), a 48-bit
    millisecond timestamp then 74 random bits.

    Time-ordered ids land at the end of the stores' primary-key index instead of all over
    it: with random ids SQLite inserted about 40 % fewer rows per second (bench/ingest).
    ``rng`` makes ids reproducible for benchmarks; agents use the system's randomness.
    """
    ms = int((time.time() if at is None else at) * 1000) & ((1 << 48) - 1)
    bits = rng.getrandbits(74) if rng is not None else int.from_bytes(secrets.token_bytes(10)) >> 6
    rand_a, rand_b = bits >> 62, bits & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return f"{value:032x}"


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


BLOCKING_VALUES: Final = frozenset(b.value for b in Blocking)
FAILURE_VALUES: Final = frozenset(f.value for f in Failure)


# On the wire a failure is any short string: ours (``Failure``), or another tool's name such
# as OONI's ``connection_refused_error``, which ingest maps onto ours and keeps beside it
# (``failure_original``): a third-party agent loses no result for naming failures its way.
FailureValue = Annotated[str, Meta(max_length=256)]

# The limits of the wire format, one alias per kind of value (docs/wire-format.md).
Id = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Addr = Annotated[str, Meta(max_length=64)]
Short = Annotated[str, Meta(max_length=256)]
Url = Annotated[str, Meta(max_length=MAX_URL_LENGTH)]
Sha256 = Annotated[str, Meta(max_length=64)]
Finite = Annotated[float, Meta(ge=-1e15, le=1e15)]  # also refuses NaN and infinities
Duration = Annotated[float, Meta(ge=0, le=1e15)]  # a duration is never negative
EpochSeconds = Annotated[float, Meta(ge=0, le=1e10)]  # up to the year 2286; not milliseconds
Count = Annotated[int, Meta(ge=0, le=2**53)]
Port = Annotated[int, Meta(ge=0, le=65535)]
Status = Annotated[int, Meta(ge=0, le=999)]
Asn = Annotated[int, Meta(ge=0, le=2**32 - 1)]
CountryCode = Annotated[str, Meta(pattern=r"^[A-Z]{2}$")]
AddrList = Annotated[list[Addr], Meta(max_length=64)]


class NetworkFacts(TypedDict):
    asn: Asn
    cc: CountryCode
    network_name: Short


class DnsFacts(TypedDict, total=False):
    resolver: Short | None  # "system", or a resolver address that is not a private one
    query: Short
    answers: AddrList  # A/AAAA answers of the direct UDP query, in order
    rcode: Annotated[str, Meta(max_length=16)] | None  # "NOERROR", "NXDOMAIN", ...
    ttls: Annotated[list[Count], Meta(max_length=64)]
    late_answers: AddrList  # answers that arrived after the first reply to the query
    system_answers: AddrList  # getaddrinfo's answers
    system_failure: FailureValue | None
    bogon: bool  # an answer is a known bogon or private address
    failure: FailureValue | None
    blockpage_elsewhere: Short | None  # a DNS fingerprint of other countries matched


class TcpFacts(TypedDict, total=False):
    address: Addr
    port: Port
    failure: FailureValue | None
    t_ms: Duration


class TlsFacts(TypedDict, total=False):
    address: Addr
    sni: Short
    failure: FailureValue | None
    version: Annotated[str, Meta(max_length=32)] | None
    cert_verified: bool
    leaf_sha256: Sha256 | None
    innocuous_sni: Short | None
    innocuous_failure: FailureValue | None  # the handshake with the innocuous SNI, if tried
    t_ms: Duration


class HttpFacts(TypedDict, total=False):
    url: Url  # the final URL after redirects
    status: Status | None
    body_length: Count | None
    body_sha256: Sha256 | None
    title: Annotated[str, Meta(max_length=1024)] | None
    # headers of note, lower-cased names
    headers: Annotated[dict[Short, Annotated[str, Meta(max_length=4096)]], Meta(max_length=64)]
    redirects: Count
    failure: FailureValue | None
    body_truncated: bool
    blockpage_elsewhere: Short | None  # a blockpage fingerprint of other countries matched


TcpList = Annotated[list[TcpFacts], Meta(max_length=64)]


class ControlFacts(TypedDict, total=False):
    dns: DnsFacts | None
    tcp: TcpList
    tls: TlsFacts | None
    http: HttpFacts | None
    failure: FailureValue | None  # the control itself could not be had


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
    failure_original: str | None = None  # the failure as another tool named it (mapped)
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
        if self.failure_original is not None:
            out["failure_original"] = self.failure_original
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


class MeasurementWire(msgspec.Struct, frozen=True):
    """A measurement as validated at ingest: the same fields as ``Measurement``, without
    ``extra`` (unknown fields are skipped by the decoder, never built)."""

    id: Id
    measured_at: EpochSeconds
    url: Url
    domain: Annotated[str, Meta(max_length=253)]
    blocking: Blocking
    accessible: bool | None = None
    network: NetworkFacts | None = None
    failure: FailureValue | None = None
    blockpage: Annotated[str, Meta(max_length=128)] | None = None
    clock_age_s: Duration | None = None
    dns: DnsFacts | None = None
    tcp: TcpList = []
    tls: TlsFacts | None = None
    http: HttpFacts | None = None
    control: ControlFacts | None = None
    timings: Annotated[dict[Short, Duration], Meta(max_length=64)] = {}
    agent_version: Annotated[str, Meta(max_length=64)] | None = None
    failure_original: FailureValue | None = None

    def __post_init__(self) -> None:
        expected = self.blocking.accessible
        if self.accessible is not expected:
            raise ValueError(
                f"{_FIELD_MARK}accessible: must be {_nil(expected)} when blocking is"
                f" {self.blocking.value}"
            )


class _Envelope(msgspec.Struct):
    schema_version: int
    agent_id: Id
    batch_id: Id
    results: Annotated[list[msgspec.Raw], Meta(max_length=MAX_RESULTS_PER_BATCH)]


class _VersionOnly(msgspec.Struct):
    schema_version: Any = None


_FIELD_MARK: Final = "\x00"  # prefixes our own messages raised inside the decoder
_MISSING_RE: Final = re.compile(r"^Object missing required field `([^`]+)`$")
_ENVELOPE_DECODER: Final = msgspec.msgpack.Decoder(_Envelope)
_VERSION_DECODER: Final = msgspec.msgpack.Decoder(_VersionOnly)
_RAW_DECODER: Final = msgspec.msgpack.Decoder(msgspec.Raw)
_MEASUREMENT_DECODER: Final = msgspec.msgpack.Decoder(MeasurementWire)
_MEASUREMENT_FIELDS: Final = frozenset(MeasurementWire.__struct_fields__)


def _nil(value: bool | None) -> str:
    return "nil" if value is None else str(value).lower()


def _schema_error(exc: msgspec.ValidationError) -> SchemaError:
    """A ``SchemaError`` naming the field of msgspec's message (``... - at `$.a.b```)."""
    message = str(exc)
    path = ""
    if " - at `$" in message:
        message, _, at = message.rpartition(" - at `$")
        path = at.rstrip("`").lstrip(".")
    missing = _MISSING_RE.match(message)
    if missing:
        name = missing.group(1)
        return SchemaError(f"{path}.{name}" if path else name, "required field is missing")
    if message.startswith(_FIELD_MARK):
        name, _, problem = message[len(_FIELD_MARK) :].partition(": ")
        return SchemaError(f"{path}.{name}" if path else name, problem)
    problem = message[:1].lower() + message[1:]
    for nil in ("null", "None"):  # msgpack calls it nil, whichever decoder spoke
        problem = problem.replace(f"`{nil}`", "`nil`").replace(f" | {nil}`", " | nil`")
    return SchemaError(path, problem)


def _decode_error(exc: Exception) -> CodecError:
    if isinstance(exc, RecursionError):
        return CodecError("not valid msgpack: nested too deeply")
    return CodecError(f"not valid msgpack: {exc}")


def decode_batch(data: bytes) -> RawBatch:
    """Decode a msgpack batch and validate its envelope; results stay undecoded msgpack.

    Raises ``CodecError`` if the bytes are not one msgpack document, ``SchemaError`` for a
    wrong schema version or a malformed envelope (the whole batch is refused). Each result
    is then checked alone by ``decode_measurement``: a bad one costs only itself.
    """
    if not data:
        raise CodecError("empty body: expected one msgpack document")
    try:
        env = _ENVELOPE_DECODER.decode(data)
    except msgspec.ValidationError as exc:
        _check_msgpack(data)
        _check_version(data)
        raise _schema_error(exc) from None
    except RecursionError:
        # A result nested too deep for the recursive decoder costs that result, not the
        # batch: split the envelope without recursion and let each result be judged.
        env = _envelope_without_recursion(data)
    except msgspec.DecodeError as exc:
        raise _decode_error(exc) from None
    check_top_level_keys(data)
    if env.schema_version != SCHEMA_VERSION:
        raise _version_error(env.schema_version)
    return RawBatch(
        agent_id=env.agent_id,
        batch_id=env.batch_id,
        schema_version=env.schema_version,
        results=env.results,
    )


def _envelope_without_recursion(data: bytes) -> _Envelope:
    parts = split_map(data)
    head: dict[str, Any] = {}
    for name in ("schema_version", "agent_id", "batch_id"):
        if name in parts:
            try:
                head[name] = msgspec.msgpack.decode(parts[name])
            except (msgspec.DecodeError, RecursionError) as exc:
                raise _decode_error(exc) from None
    if "results" in parts:
        head["results"] = []
    try:
        env = msgspec.convert(head, _Envelope)
    except msgspec.ValidationError as exc:
        raise _schema_error(exc) from None
    if "results" in parts:
        try:
            items = split_array(parts["results"])
        except SchemaError as exc:
            raise SchemaError("results", exc.problem) from None
        if len(items) > MAX_RESULTS_PER_BATCH:
            raise SchemaError("results", f"expected an array of length <= {MAX_RESULTS_PER_BATCH}")
        env.results = items  # type: ignore[assignment]  # bytes decode like Raw
    return env


def _check_msgpack(data: bytes) -> None:
    # The typed decoder stops at the first wrong type; garbage that merely starts like a
    # msgpack value (b"{" is the integer 123) is "not msgpack", not a schema problem.
    try:
        _RAW_DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _decode_error(exc) from None


def _check_version(data: bytes) -> None:
    # A batch of another version may differ anywhere: say so rather than name a field.
    try:
        version = _VERSION_DECODER.decode(data).schema_version
    except (msgspec.DecodeError, RecursionError):
        return
    if type(version) is int and version != SCHEMA_VERSION:
        raise _version_error(version)


def _version_error(version: int) -> SchemaError:
    return SchemaError(
        "schema_version",
        f"version {version} is not supported (this collector speaks {SCHEMA_VERSION})",
    )


_FACT_FAILURES: Final = ("failure", "system_failure", "innocuous_failure")


def _map_fact_failures(facts: Any) -> None:
    # Failures inside facts are mapped in place, the original kept as ``<key>_original``.
    if not facts:
        return
    for key in _FACT_FAILURES:
        value = facts.get(key)
        if value is not None:
            ours, original = mapped(value)
            if original is not None:
                facts[key] = ours
                facts[f"{key}_original"] = original


def map_failures(wire: MeasurementWire) -> MeasurementWire:
    """``wire`` with every failure in our vocabulary, other tools' names kept beside them."""
    for facts in (wire.dns, wire.tls, wire.http, *wire.tcp):
        _map_fact_failures(facts)
    control = wire.control
    if control:
        _map_fact_failures(control)
        for facts in (control.get("dns"), control.get("tls"), control.get("http")):
            _map_fact_failures(facts)
        for facts in control.get("tcp") or ():
            _map_fact_failures(facts)
    ours, original = mapped(wire.failure)
    if original is not None:
        return msgspec.structs.replace(wire, failure=ours, failure_original=original)
    return wire


def _keys(cls: Any) -> frozenset[str]:
    return frozenset(cls.__annotations__)


_FACTS_KEYS: Final = {
    "dns": _keys(DnsFacts),
    "tls": _keys(TlsFacts),
    "http": _keys(HttpFacts),
    "network": _keys(NetworkFacts),
}
_TCP_KEYS: Final = _keys(TcpFacts)
_CONTROL_KEYS: Final = _keys(ControlFacts)


def _unknown_in(part: Any, known: frozenset[str], depth: int, out: list[tuple[Any, int]]) -> None:
    # Called for every map of every record: plain loops, no generators (bench/ingest).
    if type(part) is dict and not part.keys() <= known:
        for key in part.keys() - known:
            value = part[key]
            if type(value) is dict or type(value) is list:
                out.append((value, depth + 1))


def _unknown_in_facts(facts: dict[str, Any], depth: int, out: list[tuple[Any, int]]) -> None:
    """The containers in a record's (or a control's) facts that the schema does not know."""
    keys = _FACTS_KEYS
    _unknown_in(facts.get("dns"), keys["dns"], depth + 1, out)
    _unknown_in(facts.get("tls"), keys["tls"], depth + 1, out)
    _unknown_in(facts.get("http"), keys["http"], depth + 1, out)
    _unknown_in(facts.get("network"), keys["network"], depth + 1, out)
    tcp = facts.get("tcp")
    if type(tcp) is list:
        for item in tcp:
            _unknown_in(item, _TCP_KEYS, depth + 2, out)


def _unknown_parts(record: dict[str, Any]) -> list[tuple[Any, int]]:
    out: list[tuple[Any, int]] = []
    _unknown_in(record, _MEASUREMENT_FIELDS, 1, out)
    _unknown_in_facts(record, 1, out)
    control = record.get("control")
    if type(control) is dict:
        _unknown_in(control, _CONTROL_KEYS, 2, out)
        _unknown_in_facts(control, 2, out)
    return out


def decode_measurement(raw: bytes | msgspec.Raw) -> MeasurementWire:
    """Decode and validate one msgpack measurement, failures mapped onto our vocabulary
    (``map_failures``); ``SchemaError`` names the bad field, ``CodecError`` says which rule
    of the wire format it breaks (``shared.wire_rules``)."""
    check_record(raw if isinstance(raw, bytes) else memoryview(raw), _unknown_parts)
    try:
        return map_failures(_MEASUREMENT_DECODER.decode(raw))
    except msgspec.ValidationError as exc:
        raise _schema_error(exc) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _decode_error(exc) from None


def measurement_from_wire(record: Any) -> Measurement:
    """Validate one decoded measurement map and return it typed, unknown fields in ``extra``.

    Raises ``SchemaError`` naming the first field that is missing or of the wrong type.
    """
    if type(record) is not dict:
        raise SchemaError("", "expected a map (the measurement)")
    try:
        wire = map_failures(msgspec.convert(record, MeasurementWire))
    except msgspec.ValidationError as exc:
        raise _schema_error(exc) from None
    return Measurement(
        id=wire.id,
        measured_at=float(wire.measured_at),
        url=wire.url,
        domain=wire.domain,
        blocking=wire.blocking,
        accessible=wire.accessible,
        network=wire.network,
        failure=wire.failure,
        blockpage=wire.blockpage,
        clock_age_s=None if wire.clock_age_s is None else float(wire.clock_age_s),
        dns=wire.dns,
        tcp=wire.tcp,
        tls=wire.tls,
        http=wire.http,
        control=wire.control,
        timings=wire.timings,
        agent_version=wire.agent_version,
        failure_original=wire.failure_original,
        extra={k: v for k, v in record.items() if k not in _MEASUREMENT_FIELDS},
    )


def batch_envelope_from_wire(doc: Any) -> RawBatch:
    """Validate a decoded batch's envelope; its results are validated one by one later.

    Raises ``SchemaError`` for a wrong schema version or a malformed envelope: the whole
    batch is refused. A bad result inside a good envelope costs only that result.
    """
    if type(doc) is not dict:
        raise SchemaError("", "expected a map (the batch)")
    version = doc.get("schema_version")
    if version is None:
        raise SchemaError("schema_version", "required field is missing")
    if type(version) is not int:
        raise SchemaError("schema_version", "expected `int`")
    if version != SCHEMA_VERSION:
        raise _version_error(version)
    for name in ("agent_id", "batch_id"):
        value = doc.get(name)
        if value is None:
            raise SchemaError(name, "required field is missing")
        if type(value) is not str or not _ID_RE.match(value):
            raise SchemaError(name, "expected 1-64 characters of [A-Za-z0-9_.:-]")
    results = doc.get("results")
    if results is None:
        raise SchemaError("results", "required field is missing")
    if type(results) is not list:
        raise SchemaError("results", "expected `array`")
    if len(results) > MAX_RESULTS_PER_BATCH:
        raise SchemaError("results", f"more than {MAX_RESULTS_PER_BATCH} results in one batch")
    return RawBatch(
        agent_id=doc["agent_id"], batch_id=doc["batch_id"], schema_version=version, results=results
    )


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
