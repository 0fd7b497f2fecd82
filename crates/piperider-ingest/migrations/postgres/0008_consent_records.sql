-- Verifiable consent records: every decision, chained by hash to the one
-- before it (piperider_consent::chain). Append-only; old records are pruned
-- from the start of the chain, and the hash of the last one pruned is kept
-- in settings ('consent_chain_anchor', "seq:hash") so the rest still verifies.
CREATE TABLE consent_records (
    seq BIGINT PRIMARY KEY,
    consent_id TEXT NOT NULL,
    decided_at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    policy_version BIGINT NOT NULL,
    banner_hash TEXT NOT NULL,
    gpc BIGINT NOT NULL,
    source TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX consent_records_consent_id ON consent_records (consent_id);
