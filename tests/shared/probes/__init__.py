"""Tests of shared/probes: the steps of a web measurement and their orchestration."""
