"""The censorship lab: a simulated country in network namespaces."""
