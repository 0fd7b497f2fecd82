-- Proof of ownership: the owner key each user id is bound to (the first
-- stored event that carries one binds it; nothing rebinds it). Deletion
-- and access requests are checked against it.
CREATE TABLE owner_keys (
    user_id TEXT PRIMARY KEY,
    owner_key TEXT NOT NULL,
    bound_at BIGINT NOT NULL
);
