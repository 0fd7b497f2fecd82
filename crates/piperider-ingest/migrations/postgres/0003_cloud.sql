-- PipeRider Cloud: events from visitors who chose Accept All, and the
-- audit trail of every consent decision (proof of consent; no address).

CREATE TABLE cloud_events (
    event_id TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    day TEXT NOT NULL,
    event_type TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    route TEXT NOT NULL,
    sources TEXT,
    metric TEXT
);
CREATE INDEX cloud_events_day ON cloud_events (day);

CREATE TABLE consent_audit (
    consent_id TEXT PRIMARY KEY,
    decided_at BIGINT NOT NULL,
    day TEXT NOT NULL,
    choice TEXT NOT NULL,
    policy_version BIGINT NOT NULL,
    gpc BIGINT NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX consent_audit_day ON consent_audit (day);
