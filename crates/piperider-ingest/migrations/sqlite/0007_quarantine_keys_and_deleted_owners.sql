-- Deletion leaves nothing: a quarantined event keeps only why it was
-- refused and its keys without values (no user id, no device id, no
-- value a client sent), with the salted hash of its user id so that it is
-- deleted with the user; rows kept before held the event's first bytes,
-- values included, and are dropped. A deleted user's tombstone keeps the
-- owner key that proved the deletion, so a repeated request (after a
-- timeout) is answered as done.
DELETE FROM quarantine;
ALTER TABLE quarantine RENAME COLUMN excerpt TO keys;
ALTER TABLE quarantine ADD COLUMN user_hash TEXT;
CREATE INDEX quarantine_user_hash ON quarantine (user_hash);
CREATE INDEX quarantine_received_at ON quarantine (received_at);
ALTER TABLE deleted_users ADD COLUMN owner_key TEXT;
-- A Cloud visitor who withdraws has their events deleted by visitor id.
CREATE INDEX cloud_events_visitor ON cloud_events (visitor_id);
