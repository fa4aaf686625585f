"""The example configurations operators copy from are valid for the real loaders."""

from __future__ import annotations

from pathlib import Path

from agent.config import AgentConfig
from collector.config import CollectorConfig
from shared.config import load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "config"


def test_collector_example_loads() -> None:
    """deploy/config/collector.example.yaml loads into a CollectorConfig."""
    config = load_config(CollectorConfig, DEPLOY / "collector.example.yaml")
    assert config.listen.port == 8470
    assert config.limits.max_body_bytes == 8 * 1024 * 1024


def test_agent_example_loads() -> None:
    """deploy/config/agent.example.yaml loads into an AgentConfig, durations included."""
    config = load_config(AgentConfig, DEPLOY / "agent.example.yaml")
    assert config.interval_s == 3600.0
    assert config.jitter_s == 300.0
