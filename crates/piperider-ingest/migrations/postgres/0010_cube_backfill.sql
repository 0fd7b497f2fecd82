-- The dashboard's cube (0009) of the events stored before it: their ids
-- wait here and the roller adds them to the cube alone, a batch at a
-- time (their other rollups are written). Events still queued for the
-- roller get their cube with their other rollups, so they are left out.
CREATE TABLE cube_queue (event_id uuid NOT NULL);
INSERT INTO cube_queue (event_id)
SELECT CAST(e.event_id AS uuid) FROM events e
WHERE NOT EXISTS (SELECT 1 FROM rollup_queue q WHERE q.event_id = CAST(e.event_id AS uuid));
