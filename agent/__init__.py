"""The volunteer-side daemon: schedule, runner, spool, uploader (the probes are in shared/)."""
