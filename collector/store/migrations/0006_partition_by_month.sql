-- dialect: postgres
-- filterwatch store, version 6 (PostgreSQL only; SQLite records it and changes nothing):
-- measurements partitioned by month of measured_at (declarative RANGE partitions named
-- measurements_YYYY_MM), so that retention drops whole months instead of deleting rows
-- and each month's indexes stay the size of one month.
--
-- A partitioned table's primary key must contain the partition key: it is
-- (measurement_id, measured_at). A result sent again (a retry, another collector) carries
-- the same id and the same measured_at, so ingest stays idempotent.
--
-- The collector creates the partitions it needs: filterwatch_month_partition(t) makes the
-- month of t if it does not exist (the store calls it for the months ahead and for every
-- month a batch touches). The existing rows move into their months here, in this one
-- transaction.

ALTER TABLE measurements RENAME TO measurements_v5;
ALTER INDEX measurements_pkey RENAME TO measurements_v5_pkey;
ALTER INDEX measurements_time RENAME TO measurements_v5_time;
ALTER INDEX measurements_analysis RENAME TO measurements_v5_analysis;

CREATE TABLE measurements (
    LIKE measurements_v5 INCLUDING DEFAULTS,
    PRIMARY KEY (measurement_id, measured_at)
) PARTITION BY RANGE (measured_at);
CREATE INDEX measurements_time ON measurements (measured_at, measurement_id);
CREATE INDEX measurements_analysis
    ON measurements (cc, asn, domain, measured_at, blocking, agent_id, measurement_id, network_name);

CREATE FUNCTION filterwatch_month_partition(at DOUBLE PRECISION) RETURNS TEXT
LANGUAGE plpgsql AS '
DECLARE
    month_start TIMESTAMP := date_trunc(''month'', to_timestamp(at) AT TIME ZONE ''UTC'');
    part TEXT := ''measurements_'' || to_char(month_start, ''YYYY_MM'');
BEGIN
    IF to_regclass(part) IS NULL THEN
        BEGIN
            EXECUTE format(
                ''CREATE TABLE %I PARTITION OF measurements FOR VALUES FROM (%s) TO (%s)'',
                part,
                extract(epoch FROM month_start AT TIME ZONE ''UTC''),
                extract(epoch FROM (month_start + interval ''1 month'') AT TIME ZONE ''UTC''));
        EXCEPTION WHEN duplicate_table THEN
            NULL;  -- another collector made it first
        END;
    END IF;
    RETURN part;
END';

SELECT filterwatch_month_partition(month)
FROM (SELECT DISTINCT extract(epoch FROM date_trunc('month', to_timestamp(measured_at) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS month
      FROM measurements_v5) AS months;
INSERT INTO measurements SELECT * FROM measurements_v5;
DROP TABLE measurements_v5;
