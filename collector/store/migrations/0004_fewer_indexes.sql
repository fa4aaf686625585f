-- filterwatch store, version 4: drop the two indexes that migration 0003's covering index
-- makes redundant. measurements_analysis starts with (cc, asn, domain, measured_at), so it
-- serves the cc, cc + asn and cc + asn + domain filters; every index costs every insert
-- (bench/ingest: about 1.5 times the insert rate without these two).

DROP INDEX measurements_cc_domain_time;
DROP INDEX measurements_asn_domain_time;
