"""The wire codec: every valid batch round-trips; any bytes only ever raise our own errors."""

from __future__ import annotations

import contextlib
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import schema
from shared.codec import Limits, decode, encode
from shared.errors import CodecError, SchemaError
from shared.schema import (
    SCHEMA_VERSION,
    Blocking,
    Failure,
    Measurement,
    decode_batch,
    decode_measurement,
    encode_batch,
    encode_measurement,
    is_one_value,
)

ids = st.from_regex(r"\A[A-Za-z0-9_.:-]{1,64}\Z")
text = st.text(max_size=40)
failures = st.none() | st.sampled_from([f.value for f in Failure])
addresses = st.lists(st.ip_addresses().map(str), max_size=4)
duration = st.floats(min_value=0, max_value=1e6, allow_nan=False)

# The facts are TypedDicts, plain dicts at run time: each fixed_dictionaries strategy below
# draws exactly the keys and value types of its TypedDict, which mypy cannot infer, hence
# the casts (they change nothing at run time).
dns = cast(
    "st.SearchStrategy[schema.DnsFacts]",
    st.fixed_dictionaries(
        {"query": text, "answers": addresses, "failure": failures},
        optional={
            "resolver": st.none() | text,
            "rcode": st.none() | st.sampled_from(["NOERROR", "NXDOMAIN"]),
            "bogon": st.booleans(),
            "ttls": st.lists(st.integers(0, 2**31), max_size=3),
        },
    ),
)
tcp = cast(
    "st.SearchStrategy[schema.TcpFacts]",
    st.fixed_dictionaries(
        {"address": st.ip_addresses().map(str), "port": st.integers(0, 65535), "failure": failures},
        optional={"t_ms": duration},
    ),
)
tls = cast(
    "st.SearchStrategy[schema.TlsFacts]",
    st.fixed_dictionaries(
        {"sni": text, "failure": failures},
        optional={"version": st.none() | st.just("TLSv1.3"), "cert_verified": st.booleans()},
    ),
)
http = cast(
    "st.SearchStrategy[schema.HttpFacts]",
    st.fixed_dictionaries(
        {"status": st.none() | st.integers(100, 599), "failure": failures},
        optional={
            "body_length": st.none() | st.integers(0, 2**40),
            "title": st.none() | text,
            "headers": st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=4),
        },
    ),
)
network = cast(
    "st.SearchStrategy[schema.NetworkFacts]",
    st.fixed_dictionaries(
        {
            "asn": st.integers(0, 2**32 - 1),
            "cc": st.from_regex(r"\A[A-Z]{2}\Z"),
            "network_name": text,
        }
    ),
)


@st.composite
def measurements(draw: st.DrawFn) -> Measurement:
    blocking = draw(st.sampled_from(list(Blocking)))
    return Measurement(
        id=draw(ids),
        measured_at=draw(st.floats(min_value=0, max_value=1e10, allow_nan=False)),
        url=draw(st.text(min_size=1, max_size=100)),
        domain=draw(st.text(max_size=60)),
        blocking=blocking,
        accessible=blocking.accessible,
        network=draw(st.none() | network),
        failure=draw(failures),
        dns=draw(st.none() | dns),
        tcp=draw(st.lists(tcp, max_size=3)),
        tls=draw(st.none() | tls),
        http=draw(st.none() | http),
        control=draw(
            st.none()
            | cast(
                "st.SearchStrategy[schema.ControlFacts]",
                st.fixed_dictionaries({"http": http, "failure": failures}),
            )
        ),
        timings=draw(st.dictionaries(st.text(max_size=10), duration, max_size=3)),
    )


@st.composite
def records(draw: st.DrawFn) -> tuple[Measurement, bytes]:
    """A measurement and its spooled record, maybe with fields of a newer version."""
    m = draw(measurements())
    newer = draw(
        st.dictionaries(
            st.sampled_from(["future_a", "zz_new"]),
            st.integers(-(2**63), 2**63 - 1) | text,
            max_size=2,
        )
    )
    return m, (
        encode({**decode(encode_measurement(m)), **newer}) if newer else encode_measurement(m)
    )


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(ids, ids, st.lists(records(), max_size=5))
def test_every_valid_batch_round_trips(
    agent_id: str, batch_id: str, spooled: list[tuple[Measurement, bytes]]
) -> None:
    """A batch written around spooled records is the msgpack of the batch's map, carries
    each record byte for byte (unknown fields too), and gives each measurement back."""
    data = encode_batch(agent_id, batch_id, [record for _, record in spooled])
    assert data == encode(
        {
            "schema_version": SCHEMA_VERSION,
            "agent_id": agent_id,
            "batch_id": batch_id,
            "results": [decode(record) for _, record in spooled],
        }
    )
    env = decode_batch(data)
    assert (env.agent_id, env.batch_id) == (agent_id, batch_id)
    assert [bytes(raw) for raw in env.results] == [record for _, record in spooled]
    assert [decode_measurement(raw) for raw in env.results] == [m for m, _ in spooled]


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_raise_codec_error(data: bytes) -> None:
    """The generic decoder raises CodecError and nothing else on any input."""
    with contextlib.suppress(CodecError):
        decode(data)


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_raise_our_errors_as_batches(data: bytes) -> None:
    """The batch and measurement decoders raise only CodecError or SchemaError."""
    for fn in (decode_batch, decode_measurement):
        with contextlib.suppress(CodecError, SchemaError):
            fn(data)
    assert is_one_value(data) in (True, False)  # the uploader's framing check never raises


@given(
    st.recursive(
        st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5) | st.booleans() | st.none(),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=20,
    )
)
def test_documents_round_trip(doc: Any) -> None:
    """Nested maps and arrays of scalars come back equal."""
    assert decode(encode(doc)) == doc


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xd4\x01\x00", "extension type"),
        (b"\x91" * 20 + b"\xc0", "nested deeper"),
        (encode("x" * 100), "not valid msgpack"),
        (encode([1] * 50), "not valid msgpack"),
        (b"\x01\x02", "trailing bytes"),
        (b"", "empty body"),
    ],
)
def test_limits_are_enforced(data: bytes, message: str) -> None:
    """Extension types, deep nesting, long strings, long arrays and trailing bytes are refused."""
    limits = Limits(max_str_len=50, max_array_len=40)
    with pytest.raises(CodecError, match=message):
        decode(data, limits)


def test_deep_nesting_in_a_batch_is_a_codec_error() -> None:
    """A batch nested thousands deep is refused as CodecError, not a crash."""
    with pytest.raises(CodecError):
        decode_batch(b"\x91" * 100_000 + b"\xc0")
    record = encode({"id": "x", "future": None})
    deep = record[:-1] + b"\x91" * 100_000 + b"\xc0"  # the unknown field nests 100k deep
    with pytest.raises(CodecError):
        decode_measurement(deep)
