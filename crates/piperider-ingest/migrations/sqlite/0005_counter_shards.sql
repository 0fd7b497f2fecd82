-- The counters get the shard column PostgreSQL needs (its concurrent
-- writers each add to rows of their own shard; see its migration 0004),
-- so that both databases take the same statements. SQLite has one writer:
-- its rows are all shard 0.
CREATE TABLE daily_events_sharded (
    day TEXT NOT NULL,
    event_type TEXT NOT NULL,
    shard INTEGER NOT NULL DEFAULT 0,
    events INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    tables INTEGER NOT NULL,
    columns INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    builtin_assertions INTEGER NOT NULL,
    custom_assertions INTEGER NOT NULL,
    passed_assertions INTEGER NOT NULL,
    failed_assertions INTEGER NOT NULL,
    PRIMARY KEY (day, event_type, shard)
);
INSERT INTO daily_events_sharded (day, event_type, events, errors, tables, columns, rows,
    builtin_assertions, custom_assertions, passed_assertions, failed_assertions)
SELECT day, event_type, events, errors, tables, columns, rows,
    builtin_assertions, custom_assertions, passed_assertions, failed_assertions
FROM daily_events;
DROP TABLE daily_events;
ALTER TABLE daily_events_sharded RENAME TO daily_events;

CREATE TABLE daily_buckets_sharded (
    day TEXT NOT NULL,
    metric TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    shard INTEGER NOT NULL DEFAULT 0,
    events INTEGER NOT NULL,
    PRIMARY KEY (day, metric, bucket, shard)
);
INSERT INTO daily_buckets_sharded (day, metric, bucket, events)
SELECT day, metric, bucket, events FROM daily_buckets;
DROP TABLE daily_buckets;
ALTER TABLE daily_buckets_sharded RENAME TO daily_buckets;
