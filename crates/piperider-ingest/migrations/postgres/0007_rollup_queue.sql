-- Rollups off the acknowledgement path: a group's transaction stores its
-- events and queues their ids here; each node's roller takes queued ids
-- (DELETE ... RETURNING, so an id is rolled up once whichever node takes
-- it), adds their events to the rollups and commits both together. Rows
-- queued before a crash are rolled up after it. The ids are uuids, as
-- every event id is.
CREATE TABLE rollup_queue (event_id uuid NOT NULL);
-- Rollups were written with the events before: nothing is queued.
