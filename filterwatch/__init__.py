"""The ``filterwatch`` command: one console script for the agent, collector, compare and lab."""
