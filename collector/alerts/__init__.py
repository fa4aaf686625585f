"""Telling people: webhook subscriptions, the durable outbox and its delivery worker."""
