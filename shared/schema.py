"""The wire schema, version 1: a measurement, its facts, and the batch that carries them.

The schema is documented for third parties in ``docs/wire-format.md``. Records travel as
msgpack maps. ``Measurement`` is the one type of a measurement, from the agent's probes to
the collector's store: the agent encodes it once with msgpack (``encode_measurement``),
spools those bytes and uploads them as they are (``encode_batch`` writes the envelope
around them); the collector decodes each record once, in C, with msgspec
(``decode_batch``, then ``decode_measurement``). The annotations carry every limit
(``Annotated[str, Meta(max_length=...)]``) and that one pass validates them, several
times faster than decoding first and walking the result in Python (see ``bench/ingest``).
Fields this version does not know are tolerated (newer agents can talk to older
collectors); a missing or wrongly typed field is a ``SchemaError`` that names it, e.g.
``http.status: expected `int | null`, got `str```.

Nested facts (DNS, TCP, TLS, HTTP, control) stay plain, validated dicts (TypedDicts): the
collector stores them as they came and reads only a few of their fields.
"""

from __future__ import annotations

import random
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, TypedDict

import msgpack
import msgspec
from msgspec import Meta

from shared.codec import encode
from shared.errors import CodecError, SchemaError
from shared.failures import Failure as Failure  # one of the measurement's types
from shared.failures import mapped
from shared.wire_rules import check_record, check_top_level_keys, split_array, split_map

SCHEMA_VERSION: Final = 1

MAX_RESULTS_PER_BATCH: Final = 5000
MAX_URL_LENGTH: Final = 2048


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
_ACCESSIBLE: Final = {b: b.accessible for b in Blocking}
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


class Measurement(msgspec.Struct, frozen=True):
    """One target URL measured once from one agent on one network.

    The one type of a measurement, from probe to store: the agent's probes build it, the
    agent spools and uploads its record (``encode_measurement``) as it is, and the
    collector decodes and validates that record into it again (``decode_measurement``).
    The limits in the annotations are checked by that decoding, not by building one here.
    """

    id: Id
    measured_at: EpochSeconds  # UTC, seconds since the epoch
    url: Url
    domain: Annotated[str, Meta(max_length=253)]
    blocking: Blocking
    accessible: bool | None = None
    network: NetworkFacts | None = None
    failure: FailureValue | None = None
    blockpage: Annotated[str, Meta(max_length=128)] | None = None
    clock_age_s: Duration | None = None  # seconds since the clock was confirmed by the collector
    dns: DnsFacts | None = None
    tcp: TcpList = []
    tls: TlsFacts | None = None
    http: HttpFacts | None = None
    control: ControlFacts | None = None
    timings: Annotated[dict[Short, Duration], Meta(max_length=64)] = {}
    agent_version: Annotated[str, Meta(max_length=64)] | None = None
    failure_original: FailureValue | None = None  # the failure as another tool named it

    def __post_init__(self) -> None:
        expected = _ACCESSIBLE[self.blocking]  # run for every record decoded: no property
        if self.accessible is not expected:
            raise ValueError(
                f"{_FIELD_MARK}accessible: must be {_nil(expected)} when blocking is"
                f" {self.blocking.value}"
            )


@dataclass(frozen=True, slots=True)
class RawBatch:
    """A batch whose envelope is valid; its results are still to be checked one by one."""

    agent_id: str
    batch_id: str
    schema_version: int
    results: Sequence[msgspec.Raw | bytes]  # each one record's msgpack, undecoded


def measurement_fields(m: Measurement) -> dict[str, Any]:
    """``m`` as the map an agent sends: every field in order, ``failure_original`` only
    when set (collectors set it when they map another tool's failure name)."""
    fields = msgspec.structs.asdict(m)
    if fields["failure_original"] is None:
        del fields["failure_original"]
    return fields


def encode_measurement(m: Measurement) -> bytes:
    """The msgpack record of ``m``, as the agent spools it and uploads it unchanged."""
    return encode(measurement_fields(m))


def encode_batch(agent_id: str, batch_id: str, results: Sequence[bytes]) -> bytes:
    """A batch's msgpack body around records already encoded (the spool's): the records go
    in byte for byte, so an agent never decodes, checks or encodes again what it wrote."""
    pack = msgpack.Packer(use_bin_type=True, datetime=False)
    parts = [pack.pack_map_header(4)]
    for key, value in (
        ("schema_version", SCHEMA_VERSION),
        ("agent_id", agent_id),
        ("batch_id", batch_id),
    ):
        parts += (pack.pack(key), pack.pack(value))
    parts += (pack.pack("results"), pack.pack_array_header(len(results)), *results)
    return b"".join(parts)


def is_one_value(record: bytes) -> bool:
    """Whether ``record`` is one whole msgpack value, the one thing a batch needs of each
    record around it: only the framing is read (in C, nothing built); what the record
    holds is for the collector to judge."""
    try:
        _RAW_DECODER.decode(record)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


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
_MEASUREMENT_DECODER: Final = msgspec.msgpack.Decoder(Measurement)
_MEASUREMENT_FIELDS: Final = frozenset(Measurement.__struct_fields__)
_RECORD_ENCODER: Final = msgspec.msgpack.Encoder()
# The fields an agent may leave out (those with defaults), with their keys' msgpack.
_OPTIONAL_FIELDS: Final = tuple(
    (name, _RECORD_ENCODER.encode(name), default)
    for name, default in zip(
        Measurement.__struct_fields__[-len(Measurement.__struct_defaults__) :],
        Measurement.__struct_defaults__,
        strict=True,
    )
)
# An agent's record (``encode_measurement``) beside the record of its measurement: one
# field fewer in the map header (a map16: more than 15 fields) and no trailing nil
# ``failure_original``.
_NIL_ORIGINAL: Final = _RECORD_ENCODER.encode("failure_original") + b"\xc0"
_AGENT_HEAD: Final = b"\xde" + (len(Measurement.__struct_fields__) - 1).to_bytes(2)


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
        batch = RawBatch(env.agent_id, env.batch_id, env.schema_version, env.results)
    except msgspec.ValidationError as exc:
        _check_msgpack(data)
        _check_version(data)
        raise _schema_error(exc) from None
    except RecursionError:
        # A result nested too deep for the recursive decoder costs that result, not the
        # batch: split the envelope without recursion and let each result be judged.
        batch = _envelope_without_recursion(data)
    except msgspec.DecodeError as exc:
        raise _decode_error(exc) from None
    check_top_level_keys(data)
    if batch.schema_version != SCHEMA_VERSION:
        raise _version_error(batch.schema_version)
    return batch


def _envelope_without_recursion(data: bytes) -> RawBatch:
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
    try:
        items = split_array(parts["results"])
    except SchemaError as exc:
        raise SchemaError("results", exc.problem) from None
    if len(items) > MAX_RESULTS_PER_BATCH:
        raise SchemaError("results", f"expected an array of length <= {MAX_RESULTS_PER_BATCH}")
    return RawBatch(env.agent_id, env.batch_id, env.schema_version, items)


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


def _map_fact_failures(facts: Any) -> bool:
    # Failures inside facts are mapped in place, the original kept as ``<key>_original``.
    # Whether anything changed. Most failures are ours already: they cost a set lookup.
    if not facts:
        return False
    changed = False
    for key in _FACT_FAILURES:
        value = facts.get(key)
        if value is not None and value not in FAILURE_VALUES:
            ours, original = mapped(value)
            if original is not None:
                facts[key] = ours
                facts[f"{key}_original"] = original
                changed = True
    return changed


def _map_control_failures(control: ControlFacts | None) -> bool:
    if not control:
        return False
    changed = _map_fact_failures(control)
    for facts in (control.get("dns"), control.get("tls"), control.get("http")):
        if facts:
            changed = _map_fact_failures(facts) or changed
    for tcp in control.get("tcp") or ():
        changed = _map_fact_failures(tcp) or changed
    return changed


def _mapped_failures(m: Measurement) -> Measurement | None:
    """``map_failures(m)``, or None when ``m`` had only our names (and is unchanged)."""
    changed = _map_fact_failures(m.dns)
    changed = _map_fact_failures(m.tls) or changed
    changed = _map_fact_failures(m.http) or changed
    for tcp in m.tcp:
        changed = _map_fact_failures(tcp) or changed
    changed = _map_control_failures(m.control) or changed
    failure = m.failure
    if failure is not None and failure not in FAILURE_VALUES:
        ours, original = mapped(failure)
        if original is not None:
            return msgspec.structs.replace(m, failure=ours, failure_original=original)
    return m if changed else None


def map_failures(m: Measurement) -> Measurement:
    """``m`` with every failure in our vocabulary, other tools' names kept beside them."""
    out = _mapped_failures(m)
    return m if out is None else out


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


def decode_measurement(raw: bytes | msgspec.Raw) -> Measurement:
    """Decode and validate one msgpack measurement, failures mapped onto our vocabulary
    (``map_failures``); ``SchemaError`` names the bad field, ``CodecError`` says which rule
    of the wire format it breaks (``shared.wire_rules``). Fields this version does not know
    are skipped, never built (docs/wire-format.md: they are not stored)."""
    return decode_record(raw)[0]


def decode_record(raw: bytes | msgspec.Raw) -> tuple[Measurement, bytes]:
    """``decode_measurement(raw)`` and the record the stores keep of it: the validated
    measurement as msgpack (``record_of``), known fields only, as the schema types them.

    One typed decode does the work for what agents send. The wire rules
    (``shared.wire_rules.check_record``: no extension type, no key twice, bounded nesting)
    need no second pass over a record that is the msgpack of the measurement it decoded
    to: the bytes then hold exactly one document, the one re-encoded, with no unknown
    field, no repeated key and the schema's own depth. Any other record (unknown fields,
    another encoder's choices, an error) takes the full check before its error or its
    measurement is given, so what is refused, and with which message, is as before.
    """
    data = raw if type(raw) is bytes else bytes(raw)
    try:
        m = _MEASUREMENT_DECODER.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        check_record(data, _unknown_parts)  # a broken wire rule is named first
        if isinstance(exc, msgspec.ValidationError):
            raise _schema_error(exc) from None
        raise _decode_error(exc) from None
    record = _RECORD_ENCODER.encode(m)
    if not _is_wire_of(data, m, record):
        check_record(data, _unknown_parts)
    out = _mapped_failures(m)  # after the comparison: it changes the facts in place
    if out is None:
        return m, record
    return out, _RECORD_ENCODER.encode(out)


def record_of(m: Measurement) -> bytes:
    """The record the stores keep of a validated measurement (see ``decode_record``)."""
    return _RECORD_ENCODER.encode(m)


def _is_wire_of(data: bytes, m: Measurement, record: bytes) -> bool:
    """Whether ``data`` is the msgpack of ``m`` (``record``), perhaps without some fields
    at their defaults (as agents send it, without ``failure_original`` when it is nil)."""
    if record == data:
        return True
    if (
        data.startswith(_AGENT_HEAD)
        and len(data) == len(record) - len(_NIL_ORIGINAL)
        and m.failure_original is None
        and record.startswith(data[len(_AGENT_HEAD) :], len(_AGENT_HEAD))
    ):
        return True
    # Some other fields left out at their defaults (another agent's encoder): the same
    # comparison without them. A field whose name is nowhere in the bytes was left out; a
    # name found elsewhere (in a value) only costs the full check.
    fields = msgspec.structs.asdict(m)
    for name, key, default in _OPTIONAL_FIELDS:
        if fields[name] == default and key not in data:
            del fields[name]
    return _RECORD_ENCODER.encode(fields) == data


def validate_control(doc: Any) -> ControlFacts:
    """A decoded control answer (``POST /api/v1/control``) checked by the rules of a
    measurement's ``control``, failures mapped; ``SchemaError`` names the bad field."""
    try:
        control = msgspec.convert(doc, ControlFacts)
    except msgspec.ValidationError as exc:
        error = _schema_error(exc)
        raise SchemaError(f"control.{error.field}".rstrip("."), error.problem) from None
    _map_control_failures(control)
    return control
