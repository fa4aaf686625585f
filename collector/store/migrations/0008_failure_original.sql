-- The failure as another tool named it (OONI's connection_refused_error, ...), when ingest
-- mapped it onto our vocabulary; NULL when the agent used ours.
ALTER TABLE measurements ADD COLUMN failure_original TEXT;
