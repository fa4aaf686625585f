"""Code that the agent and the collector both use: wire schema, codec, config, logging, and
the web measurement with its verdict and blockpage fingerprints (the agent measures from
inside an ISP, the collector's control endpoint from outside)."""
