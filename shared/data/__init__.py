"""Data files shipped with the agent and the collector (blockpage fingerprints)."""
