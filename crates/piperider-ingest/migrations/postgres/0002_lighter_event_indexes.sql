-- Retention deletes by time once an hour: a BRIN index on the (mostly
-- ascending) timestamp serves it at a fraction of a B-tree's insert cost.
DROP INDEX events_ts;
CREATE INDEX events_ts_brin ON events USING brin (ts);
