-- An index on events.user_id puts each insert on a random page of it (a
-- commit of ten events from ten users wrote ten index pages). An index on
-- the day grows at its end instead. A user's events are found through the
-- days `daily_users` records for that user, which the writer keeps
-- complete for every stored event.
DROP INDEX events_user;
CREATE INDEX events_day ON events (day);
