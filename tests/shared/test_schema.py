"""Wire schema v1: errors name the field, unknown fields are tolerated, limits hold."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from shared.codec import decode, encode
from shared.errors import CodecError, SchemaError
from shared.schema import (
    FAILURE_VALUES,
    SCHEMA_VERSION,
    Blocking,
    Measurement,
    decode_batch,
    decode_measurement,
    decode_record,
    encode_measurement,
    measurement_fields,
    record_of,
    validate_control,
)
from tests.factories import measurement

BASE: dict[str, Any] = {
    "id": "m-1",
    "measured_at": 1_700_000_000.5,
    "url": "https://x.example/",
    "domain": "x.example",
    "blocking": "dns",
    "accessible": False,
}


def test_failure_mapping_knows_exactly_the_enum() -> None:
    """The vocabulary other tools' names are mapped onto is exactly the Failure enum."""
    from shared.failures import OURS

    assert OURS == FAILURE_VALUES


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("ssl_invalid_certificate", "ssl_failed_handshake"),
        ("http_invalid_redirect_location_host", "unknown_failure"),
        (
            "unknown_failure: read tcp 10.0.0.1:443: use of closed network connection",
            "unknown_failure",
        ),
        ("connection_refused_error", "connection_refused"),
        ("dns_lookup_error", "dns_servfail_error"),
        ("connection_reset: read: connection reset by peer", "connection_reset"),
        ("[Errno 111] Connection refused", "connection_refused"),
    ],
)
def test_ooni_failures_are_accepted_mapped_and_kept(name: str, ours: str) -> None:
    """An OONI failure name in a result is mapped onto ours; the original stays beside it."""
    rec = {**BASE, "failure": name, "dns": {"failure": name}, "tcp": [{"failure": name}]}
    m = decode_measurement(encode(rec))
    assert (m.failure, m.failure_original) == (ours, name)
    assert m.dns is not None and (m.dns["failure"], m.dns.get("failure_original")) == (ours, name)
    assert m.tcp[0]["failure"] == ours


def test_our_own_failures_carry_no_original() -> None:
    """A failure already in our vocabulary is kept as it is, with no original beside it."""
    m = decode_measurement(encode({**BASE, "failure": "connection_reset"}))
    assert (m.failure, m.failure_original) == ("connection_reset", None)


def test_the_agents_record_holds_every_field_in_order() -> None:
    """An agent's record is the map of every field, in the schema's order, with
    ``failure_original`` only when it is set; it decodes back to the same measurement."""
    m = measurement(
        "https://x.example/",
        Blocking.TLS,
        measured_at=1_700_000_000.5,
        failure="ssl_failed_handshake",
        tls={"sni": "x.example", "failure": "ssl_failed_handshake"},
        timings={"tls_ms": 12.5},
    )
    fields = list(Measurement.__struct_fields__)
    assert list(decode(encode_measurement(m))) == fields[:-1]
    assert fields[-1] == "failure_original"
    assert decode(encode_measurement(m))["blocking"] == "tls"
    assert decode_measurement(encode_measurement(m)) == m


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"id": None}, "id", "expected `str`, got `nil`"),
        ({"id": "has space"}, "id", "matching regex"),
        ({"measured_at": "now"}, "measured_at", "expected `float`, got `str`"),
        ({"measured_at": 1.7e12}, "measured_at", "<= 10000000000.0"),
        ({"blocking": "maybe"}, "blocking", "invalid enum value 'maybe'"),
        ({"accessible": True}, "accessible", "must be false when blocking is dns"),
        ({"network": {"asn": -1, "cc": "IR", "network_name": ""}}, "network.asn", ">= 0"),
        ({"network": {"asn": 1, "network_name": ""}}, "network.cc", "required field is missing"),
        ({"dns": {"answers": "1.2.3.4"}}, "dns.answers", "expected `array`, got `str`"),
        ({"dns": {"failure": "x" * 300}}, "dns.failure", "length <= 256"),
        ({"tcp": [{"port": 1}, {"port": "x"}]}, "tcp[1].port", "expected `int`, got `str`"),
        ({"http": {"status": 1000}}, "http.status", "<= 999"),
        ({"http": {"headers": {"a": 5}}}, "http.headers[...]", "expected `str`, got `int`"),
        ({"control": {"http": {"body_length": -5}}}, "control.http.body_length", ">= 0"),
        ({"timings": {"dns": float("nan")}}, "timings[...]", "expected `float` >="),
        ({"url": "u" * 3000}, "url", "length <= 2048"),
    ],
)
def test_errors_name_the_field(changes: dict[str, Any], field: str, problem: str) -> None:
    """A wrong type, value or a missing field is a SchemaError naming that field."""
    rec = {**BASE, **changes}
    with pytest.raises(SchemaError) as info:
        decode_measurement(encode(rec))
    assert info.value.field == field
    assert problem in info.value.problem


@pytest.mark.parametrize(
    ("doc", "field", "problem"),
    [
        ({"http": {"body_length": -5}}, "control.http.body_length", ">= 0"),
        ({"tcp": [{"port": "x"}]}, "control.tcp[0].port", "expected `int`, got `str`"),
        ({"dns": {"answers": "1.2.3.4"}}, "control.dns.answers", "expected `array`, got `str`"),
        (["not", "a", "map"], "control", "expected `object`, got `array`"),
    ],
)
def test_control_errors_name_the_field(doc: Any, field: str, problem: str) -> None:
    """A control answer is checked by the rules of a measurement's ``control``."""
    with pytest.raises(SchemaError) as info:
        validate_control(doc)
    assert info.value.field == field
    assert problem in info.value.problem


def test_control_failures_are_mapped() -> None:
    """Another tool's failure name in a control answer is mapped, the original kept."""
    control = validate_control({"failure": "generic_timeout_error", "http": {"failure": "eof"}})
    assert control["failure"] == "generic_timeout_error"
    assert control["http"] == {"failure": "eof_error", "failure_original": "eof"}


def test_missing_required_field_is_named() -> None:
    """Leaving out a required field names it."""
    rec = {k: v for k, v in BASE.items() if k != "domain"}
    with pytest.raises(SchemaError, match=r"^domain: required field is missing$"):
        decode_measurement(encode(rec))


def test_unknown_fields_are_tolerated() -> None:
    """Fields of a newer version are skipped when decoding, at any level (the agent's
    uploader passes them on untouched: tests/agent/test_uploader.py)."""
    quic = {"failure": "new_kind", "nested": [[1, 2], {"a": None}]}
    rec = {**BASE, "quic": quic, "dns": {"answers": ["192.0.2.1"], "doh": quic}}
    m = decode_measurement(encode(rec))
    assert m == decode_measurement(encode({**BASE, "dns": {"answers": ["192.0.2.1"]}}))


@pytest.mark.parametrize(
    ("doc", "field", "problem"),
    [
        ({"schema_version": 2, "agent": "renamed"}, "schema_version", "version 2 is not supported"),
        ({"schema_version": "1"}, "schema_version", "expected `int`, got `str`"),
        ({"schema_version": 1, "agent_id": "a", "batch_id": "b"}, "results", "missing"),
        ({"schema_version": 1, "agent_id": "a", "batch_id": "b", "results": 5}, "results", "array"),
        (
            {"schema_version": 1, "agent_id": "a", "batch_id": "b", "results": [0] * 5001},
            "results",
            "length <= 5000",
        ),
    ],
)
def test_envelope_errors(doc: dict[str, Any], field: str, problem: str) -> None:
    """Envelope problems refuse the whole batch, naming the field."""
    with pytest.raises(SchemaError) as info:
        decode_batch(encode(doc))
    assert info.value.field == field
    assert problem in info.value.problem


def test_envelope_keeps_results_undecoded() -> None:
    """The envelope's results are raw msgpack, each decoded on its own."""
    env = decode_batch(
        encode(
            {
                "schema_version": SCHEMA_VERSION,
                "agent_id": "a",
                "batch_id": "b",
                "results": [BASE, 3],
            }
        )
    )
    assert isinstance(env.results[0], msgspec.Raw)
    assert decode_measurement(env.results[0]).blocking.value == "dns"
    with pytest.raises(SchemaError):
        decode_measurement(env.results[1])


def test_new_measurement_ids_are_uuid7_ordered_by_time_and_unique() -> None:
    """Measurement ids are UUIDv7-shaped hex, sort by their millisecond, and do not repeat."""
    import random
    import uuid

    from shared.schema import new_measurement_id

    ids = [new_measurement_id(1_700_000_000.0 + i / 100) for i in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    parsed = uuid.UUID(ids[0])
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert int(ids[0][:12], 16) == 1_700_000_000_000
    same_ms = {new_measurement_id(1.0) for _ in range(1000)}
    assert len(same_ms) == 1000
    seeded = [new_measurement_id(5.0, random.Random(3)) for _ in range(2)]
    assert seeded[0] == seeded[1]


FULL = Measurement(
    id="m-3",
    measured_at=1_700_000_000.5,
    url="https://x.example/",
    domain="x.example",
    blocking=Blocking.TLS,
    accessible=False,
    network={"asn": 64500, "cc": "IR", "network_name": "Example"},
    failure="connection_reset",
    dns={"query": "x.example", "answers": ["192.0.2.1"], "failure": None},
    tcp=[{"address": "192.0.2.1", "port": 443, "failure": None, "t_ms": 4.5}],
    tls={"sni": "x.example", "failure": "connection_reset"},
    control={"http": {"status": 200, "failure": None}, "failure": None},
    timings={"tls": 12.5},
)


def _layouts() -> dict[str, bytes]:
    fields = measurement_fields(FULL)
    every = {**fields, "failure_original": None}
    sparse = {k: v for k, v in fields.items() if v is not None and v != [] and v != {}}
    return {
        "the agent's": encode_measurement(FULL),
        "every field": encode(every),
        "fields at their defaults left out": encode(sparse),
        "blockpage left out": encode({k: v for k, v in fields.items() if k != "blockpage"}),
        "another order": encode(dict(reversed(list(fields.items())))),
        "with an unknown field": encode({**fields, "future": {"a": [1]}}),
    }


@pytest.mark.parametrize("layout", sorted(_layouts()))
def test_decode_record_gives_the_measurement_and_its_stored_record(layout: str) -> None:
    """However a valid record is laid out, ``decode_record`` gives the measurement that
    ``decode_measurement`` gives and the record the stores keep of it."""
    raw = _layouts()[layout]
    m, stored = decode_record(raw)
    assert m == FULL == decode_measurement(raw)
    assert stored == record_of(FULL)


def test_the_stored_record_has_the_failures_mapped() -> None:
    """A record whose failures are another tool's names is stored with ours, the
    originals beside them."""
    raw = encode({**measurement_fields(FULL), "failure": "connection_reset_error"})
    m, stored = decode_record(raw)
    assert (m.failure, m.failure_original) == ("connection_reset", "connection_reset_error")
    assert stored == record_of(m) and decode_measurement(stored) == m


def _key_twice(raw: bytes, part: dict[str, Any], key: str) -> bytes:
    """``raw`` with the map ``part`` in it given ``key`` (with its value) a second time."""
    inner = encode(part)
    assert raw.count(inner) == 1 and inner[0] < 0x8F  # a fixmap that can take one more
    again = bytes([inner[0] + 1]) + inner[1:] + encode(key) + encode(part[key])
    return raw.replace(inner, again)


def test_a_key_twice_inside_an_agents_record_is_refused() -> None:
    """An agent's record with a key twice in a known map, the same value both times
    (which the typed decoder alone would take), is refused, naming the key."""
    assert FULL.tls is not None
    raw = _key_twice(encode_measurement(FULL), dict(FULL.tls), "sni")
    with pytest.raises(CodecError, match="the key 'sni' appears twice"):
        decode_record(raw)


def test_a_field_twice_in_a_record_as_long_as_the_stored_one_is_refused() -> None:
    """A record of as many entries as the stored record, the last one a field again
    instead of ``failure_original``, is refused."""
    raw = encode_measurement(FULL)
    count = int.from_bytes(raw[1:3])
    twice = b"\xde" + (count + 1).to_bytes(2) + raw[3:] + encode("url") + encode(FULL.url)
    with pytest.raises(CodecError, match="the key 'url' appears twice"):
        decode_record(twice)
