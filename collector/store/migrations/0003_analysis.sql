-- filterwatch store, version 3: the index the analysis aggregation reads.
-- It covers every column the per-(cc, asn, domain, bucket) GROUP BY touches, in the order
-- it groups, so the aggregation scans this index and never the rows with their records.

CREATE INDEX measurements_analysis
    ON measurements (cc, asn, domain, measured_at, blocking, agent_id, measurement_id, network_name);
