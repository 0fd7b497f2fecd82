-- Every transaction adds to the counters of its day and command. With one
-- row per day and command, concurrent writers queued on that row until its
-- holder had committed (a disk flush), so they took turns. Each writer now
-- adds to rows of its own shard, and reads sum the shards.
ALTER TABLE daily_events ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
ALTER TABLE daily_events DROP CONSTRAINT daily_events_pkey;
ALTER TABLE daily_events ADD PRIMARY KEY (day, event_type, shard);
ALTER TABLE daily_buckets ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
ALTER TABLE daily_buckets DROP CONSTRAINT daily_buckets_pkey;
ALTER TABLE daily_buckets ADD PRIMARY KEY (day, metric, bucket, shard);

-- Every transaction updates the rows of its users and projects, and
-- `last_seen` changes each time. An index on it made every such update
-- write a new entry into each index of the table and leave dead ones behind
-- that later lookups of the same user stepped over. Without it (the stats
-- read these tables whole: they cost the number of users), and with room
-- left in each page, an update stays on its page and touches no index.
DROP INDEX users_last_seen;
DROP INDEX projects_last_seen;
ALTER TABLE users SET (fillfactor = 70);
ALTER TABLE projects SET (fillfactor = 70);

