"""filterwatch."""
