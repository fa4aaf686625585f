"""Code that the agent and the collector both use: wire schema, codec, config, logging."""
