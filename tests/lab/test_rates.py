"""Blocking rates below 1, enforced for real: the routers' kernel rules, the ISP resolver
and the transparent proxy each block only part of the time, and the kernel holds a draw
for the rest of an agent's measurement.

``tests/lab/rate_harness.py`` builds the network in the lab's sandbox and measures from
one agent's namespace with many source addresses, one per simulated agent. The bounds are
far from the expected share (six standard deviations), so that they
cannot fail by chance, and still fail for a rule that blocks always or never.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.lab.sandbox import ROOT, harness_command, harness_env, require_lab

pytestmark = pytest.mark.lab
SOURCES = 60  # the iptables ``recent`` lists hold 100 addresses each


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require_lab()
    tmp = tmp_path_factory.mktemp("lab-rates")
    proc = subprocess.run(
        harness_command("tests.lab.rate_harness", tmp / "run", "rates-check.yaml", str(SOURCES)),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=harness_env(),
        timeout=180,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"the rate harness failed: {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def share_is_about(blocked: int, tries: int, rate: float = 0.7) -> bool:
    """Strictly between none and all, and within six standard deviations of the rate."""
    sd = (tries * rate * (1 - rate)) ** 0.5
    return 0 < blocked < tries and abs(blocked - tries * rate) < 6 * sd


def conclusive(outcomes: list[str], blocked: str, passed: str) -> tuple[int, int]:
    """(blocked, blocked + passed): a probe that timed out on a busy machine says nothing."""
    b, p = outcomes.count(blocked), outcomes.count(passed)
    return b, b + p


def test_ip_block_drops_about_the_rate_of_connections(seen: dict[str, Any]) -> None:
    """nft ``numgen random``: about 70 % of the agents' connections to the address time out."""
    blocked = seen["ip_block"].count(False)
    assert share_is_about(blocked, SOURCES), blocked


def test_ip_block_holds_each_agents_draw(seen: dict[str, Any]) -> None:
    """A second connection of the same agent within the hold gets the first one's answer:
    one draw per measurement, not per connection (a redraw would let some of the ~40
    dropped agents through)."""
    assert seen["hold_s"] == 30  # long, so that a busy machine stays inside it
    first, again = seen["ip_block"], seen["ip_block_again"]
    assert not any(a and not f for f, a in zip(first, again, strict=True))
    assert any(again)


def test_sni_reset_resets_about_the_rate_of_handshakes(seen: dict[str, Any]) -> None:
    """iptables ``statistic``: about 70 % of the ClientHellos naming the site are reset; a
    handshake naming another host is never reset."""
    blocked, tries = conclusive(seen["sni_reset"], "reset", "handshake")
    assert tries >= SOURCES // 2, seen["sni_reset"]
    assert share_is_about(blocked, tries), seen["sni_reset"]
    assert "reset" not in seen["sni_innocuous"]


def test_sni_reset_holds_each_agents_draw(seen: dict[str, Any]) -> None:
    """A second handshake of the same agent within the hold is reset exactly when the first
    was (where both got an answer)."""
    pairs = [
        (f, a)
        for f, a in zip(seen["sni_reset"], seen["sni_reset_again"], strict=True)
        if {f, a} <= {"reset", "handshake"}
    ]
    assert len(pairs) >= SOURCES // 2
    assert all(f == a for f, a in pairs), pairs


def test_dns_injection_forges_about_the_rate_of_answers(seen: dict[str, Any]) -> None:
    """The ISP resolver draws per query: about 70 % of the answers point at the blockpage."""
    blocked, tries = conclusive(seen["dns_inject"], "blockpage", "answer")
    assert tries >= SOURCES
    assert share_is_about(blocked, tries), blocked


def test_blockpage_is_served_for_about_the_rate_of_requests(seen: dict[str, Any]) -> None:
    """The transparent proxy draws per request: about 70 % get the blockpage, the rest the
    site."""
    blocked, tries = conclusive(seen["http_blockpage"], "blockpage", "page")
    assert tries >= SOURCES // 2
    assert share_is_about(blocked, tries), seen["http_blockpage"]
