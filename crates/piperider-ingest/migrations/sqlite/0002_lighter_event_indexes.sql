-- Retention deletes by time once an hour; a scan is cheap at that rate,
-- while an index on a timestamp costs every insert.
DROP INDEX events_ts;
