"""The volunteer-side daemon: probes, spool, uploader."""
