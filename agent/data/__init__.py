"""Data files shipped with the agent (blockpage fingerprints)."""
