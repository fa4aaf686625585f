"""A bounded, seeded fuzz suite against a live collector (issue 9): mutated real batches,
random bodies for every endpoint and malformed requests on raw sockets. Whatever comes in:
no 5xx, the collector stays alive, the accepted counts add up to the rows stored, and no
token reaches the log. ``bench/fuzz`` runs the same inputs by the hundred thousand."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_inputs import batch, http_request, malformed_request
from tests.live_collector import LiveCollector, live_collector, request

pytestmark = pytest.mark.slow

CLOSED_CONTROL = "control: {resolver: '127.0.0.1:9', allow_public: false, timeout_s: 1}\n"


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,  # seeded: CI runs the same inputs every time
        database=None,
        suppress_health_check=list(HealthCheck),
    )


class Campaign:
    """The live collector, the agent whose token every input carries, and the tally."""

    def __init__(self, live: LiveCollector) -> None:
        self.live = live
        self.agent_id, self.token = live.enroll()
        self.real_batch = batch(random.Random(9), self.agent_id, 20)
        self.accepted = 0
        self.statuses: dict[int, int] = {}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    with live_collector(tmp_path_factory.mktemp("fuzz"), CLOSED_CONTROL) as live:
        yield Campaign(live)


def send_raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        sock.settimeout(5)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass  # a request the collector still waits on (a short body): not an answer
        except ConnectionResetError:
            pass
    return b"".join(chunks)


@given(rng=st.randoms(use_true_random=False))
@fuzz_settings(300)
def test_fuzzed_http_requests_never_get_a_5xx(campaign: Campaign, rng: random.Random) -> None:
    """Mutated batches and random requests to every endpoint: always an answer below 500."""
    fuzz = http_request(rng, campaign.agent_id, campaign.real_batch)
    status, body = request(
        campaign.live.port, fuzz.method, fuzz.path, fuzz.body, fuzz.content_type, campaign.token
    )
    campaign.statuses[status] = campaign.statuses.get(status, 0) + 1
    assert status < 500, body[:300]
    if fuzz.kind == "batch" and status == 200:
        campaign.accepted += json.loads(body)["accepted"]


@given(rng=st.randoms(use_true_random=False))
@fuzz_settings(150)
def test_malformed_raw_requests_never_get_a_5xx(campaign: Campaign, rng: random.Random) -> None:
    """Broken request lines, headers, framing and line endings: a 4xx or nothing, never 5xx."""
    answer = send_raw(campaign.live.port, malformed_request(rng, campaign.token))
    if answer.startswith(b"HTTP/1."):
        status = int(answer.split(b" ", 2)[1])
        assert status < 500, answer[:300]


def test_after_the_campaign(campaign: Campaign) -> None:
    """The collector is alive, stored exactly what it accepted, and logged no token."""
    live = campaign.live
    assert live.alive()
    assert live.stored() == campaign.accepted
    log = live.log_text()
    assert campaign.token not in log
    assert "Traceback" not in log
    assert sum(campaign.statuses.values()) > 0
