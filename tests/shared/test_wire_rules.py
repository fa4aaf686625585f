"""shared.wire_rules: the structural rules of the wire format, checked on bytes."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.codec import encode
from shared.errors import CodecError, SchemaError
from shared.wire_rules import (
    MAX_RECORD_DEPTH,
    check_record,
    check_top_level_keys,
    split_array,
    split_map,
)

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def nested(depth: int) -> bytes:
    return b"\x81\xa1k" * (depth - 1) + b"\x80"


def test_depth_limit_is_exact() -> None:
    """A record nested MAX_RECORD_DEPTH deep passes; one level more is refused."""
    check_record(nested(MAX_RECORD_DEPTH))
    with pytest.raises(CodecError, match="nested deeper"):
        check_record(nested(MAX_RECORD_DEPTH + 1))


@pytest.mark.parametrize(
    "data",
    [b"\x81\xa1k\xd4\x01\x00", b"\x81\xa1k\xc7\x00\x05", b"\x91\xd6\xff\x00\x00\x00\x00"],
)
def test_extension_types_are_refused_anywhere(data: bytes) -> None:
    """Extension types, the timestamp included, are refused at any position."""
    with pytest.raises(CodecError, match="extension"):
        check_record(data)


@given(json_like)
@settings(max_examples=200, deadline=None)
def test_plain_documents_pass_and_split_like_the_decoder(doc: object) -> None:
    """Documents of maps, arrays and scalars pass; split_map sees the decoder's keys."""
    data = encode(doc)
    if isinstance(doc, dict | list):
        try:
            check_record(data)
        except CodecError as exc:
            assert "nested deeper" in str(exc)
    if isinstance(doc, dict):
        parts = split_map(data)
        assert {k: msgpack.unpackb(v, raw=False) for k, v in parts.items()} == doc
    if isinstance(doc, list):
        assert [msgpack.unpackb(item, raw=False) for item in split_array(data)] == doc


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_random_bytes_only_raise_our_errors(data: bytes) -> None:
    """Whatever the bytes, the checks raise CodecError or SchemaError, nothing else."""
    for check in (check_record, split_map, split_array, check_top_level_keys):
        with contextlib.suppress(CodecError, SchemaError):
            check(data)


def test_duplicate_top_level_keys_are_named() -> None:
    """The envelope check and the iterative split both name a key given twice."""
    data = b"\x82\xa1a\x01\xa1a\x02"
    with pytest.raises(SchemaError, match="appears twice"):
        check_top_level_keys(data)
    with pytest.raises(SchemaError, match="appears twice"):
        split_map(data)
