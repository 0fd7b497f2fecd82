-- Raw events partitioned by month of their day, so retention drops a
-- month's partition whole instead of deleting its rows one by one. The
-- maintenance pass creates the partitions of this month and the next
-- ahead and moves rows of any other month out of the default partition
-- into a partition of their own (storage/partitions.rs).
--
-- A key of a partitioned table must hold the partition key: an event is
-- unique by (event_id, day). Both write paths also look for the event id
-- on the neighbouring days before inserting (a resend of an event whose
-- clock was ahead of the receiver's may fall on another day), so an event
-- is still stored once.
--
-- The existing rows move in this migration's transaction: the table is
-- renamed, its months get their partitions, every row is copied, and the
-- old table is dropped only after the copy, all or nothing.
ALTER TABLE events RENAME TO events_unpartitioned;
ALTER TABLE events_unpartitioned RENAME CONSTRAINT events_pkey TO events_unpartitioned_pkey;
ALTER INDEX events_user RENAME TO events_unpartitioned_user;
ALTER INDEX events_ts_brin RENAME TO events_unpartitioned_ts_brin;

CREATE TABLE events (
    event_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    day TEXT NOT NULL,
    event_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    os TEXT NOT NULL,
    arch TEXT NOT NULL,
    os_version TEXT NOT NULL,
    runtime_name TEXT NOT NULL,
    runtime_version TEXT NOT NULL,
    app_version TEXT NOT NULL,
    initial_version TEXT NOT NULL,
    ci TEXT,
    project_id TEXT,
    datasource_type TEXT,
    tables BIGINT,
    columns BIGINT,
    rows BIGINT,
    builtin_assertions BIGINT,
    custom_assertions BIGINT,
    passed_assertions BIGINT,
    failed_assertions BIGINT,
    status TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    country TEXT,
    region TEXT,
    PRIMARY KEY (event_id, day)
) PARTITION BY RANGE (day);

-- Rows of a month without a partition (none after the maintenance pass).
CREATE TABLE events_default PARTITION OF events DEFAULT;

DO $$
DECLARE
    m TEXT;
BEGIN
    FOR m IN
        SELECT DISTINCT substr(day, 1, 7) FROM events_unpartitioned
        WHERE day ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'
    LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
            'events_' || replace(m, '-', '_'),
            m || '-01',
            to_char(CAST(m || '-01' AS date) + interval '1 month', 'YYYY-MM-DD')
        );
    END LOOP;
END $$;

INSERT INTO events SELECT * FROM events_unpartitioned;
DROP TABLE events_unpartitioned;

CREATE INDEX events_user ON events (user_id);
CREATE INDEX events_ts_brin ON events USING brin (ts);

-- The roller reads the events of the ids it takes from the partitions of
-- their days alone. Ids queued before this have no day (read everywhere).
ALTER TABLE rollup_queue ADD COLUMN day DATE;
