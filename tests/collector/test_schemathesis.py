"""schemathesis against a live collector with its own OpenAPI document: every operation,
a bounded number of seeded examples each; any 5xx, any status, content type, header or body
the document does not allow, or a crash fails the test.

The collector's control is closed (``allow_public: false``, a dead loopback resolver), so
no generated URL can make it send a packet beyond loopback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.core.result import Err
from schemathesis.transport.requests import REQUESTS_TRANSPORT

from tests.live_collector import ANALYST_TOKEN, LiveCollector, live_collector

EXAMPLES_PER_OPERATION = 20
pytestmark = pytest.mark.slow

CLOSED_CONTROL = "control: {resolver: '127.0.0.1:9', allow_public: false, timeout_s: 1}\n"
ANALYST_PATHS = frozenset({"/api/v1/compare", "/api/v1/leaks", "/api/v1/export"})
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@REQUESTS_TRANSPORT.serializer("application/vnd.msgpack")
def _msgpack_body(ctx: Any, value: Any) -> dict[str, Any]:
    try:
        return {"data": msgpack.packb(value, use_bin_type=True)}
    except (OverflowError, TypeError, ValueError):
        # A value msgpack cannot hold (an integer beyond 64 bits): send bytes that are not
        # msgpack at all, which the collector must refuse with a 400.
        return {"data": repr(value).encode("utf-8", "replace")[:4096]}


@schemathesis.deserializer("application/vnd.msgpack")
def _msgpack_answer(ctx: Any, response: Any) -> Any:
    return msgpack.unpackb(response.content, raw=False)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCollector]:
    with live_collector(tmp_path_factory.mktemp("schemathesis"), CLOSED_CONTROL) as collector:
        yield collector


@pytest.fixture(scope="module")
def agent_token(live: LiveCollector) -> str:
    return live.enroll()[1]


def operations(live: LiveCollector) -> list[Any]:
    # The document as the live collector serves it (from_url leaves out the document's
    # own path; this checks that one too).
    api = schemathesis.openapi.from_dict(live_document(live))
    found = []
    for result in api.get_all_operations():
        if isinstance(result, Err):
            pytest.fail(f"the document has an invalid operation: {result.err()}")
        found.append(result.ok())
    return found


def test_the_collector_keeps_to_its_openapi_document(live: LiveCollector, agent_token: str) -> None:
    """Each operation's answers match the document; the collector never answers 5xx."""
    checked = []
    for operation in operations(live):
        token = ANALYST_TOKEN if operation.path in ANALYST_PATHS else agent_token
        started = time.monotonic()
        check_operation(live, operation, {"Authorization": f"Bearer {token}"})
        print(f"{operation.label}: {time.monotonic() - started:.1f} s")
        assert live.alive(), f"the collector died on {operation.label}"
        checked.append(operation.label)
    documented = sum(len(item) for item in live_document(live)["paths"].values())
    assert len(checked) == documented
    print(
        f"schemathesis: {len(checked)} operations checked, {EXAMPLES_PER_OPERATION} examples each"
    )


def check_operation(live: LiveCollector, operation: Any, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: Any) -> None:
        case.call_and_validate(base_url=live.url, headers=headers, checks=CHECKS, timeout=30)

    run()


def live_document(live: LiveCollector) -> dict[str, Any]:
    import json

    from tests.live_collector import request

    status, body = request(live.port, "GET", "/api/v1/openapi.json")
    assert status == 200
    doc: dict[str, Any] = json.loads(body)
    return doc
