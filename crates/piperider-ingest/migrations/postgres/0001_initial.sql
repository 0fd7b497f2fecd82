-- The telemetry store on PostgreSQL. Times are milliseconds since the epoch (UTC);
-- days are 'YYYY-MM-DD' (UTC). No column holds an IP address.

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE events (
    event_id TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    day TEXT NOT NULL,
    event_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    os TEXT NOT NULL,
    arch TEXT NOT NULL,
    os_version TEXT NOT NULL,
    runtime_name TEXT NOT NULL,
    runtime_version TEXT NOT NULL,
    app_version TEXT NOT NULL,
    initial_version TEXT NOT NULL,
    ci TEXT,
    project_id TEXT,
    datasource_type TEXT,
    tables BIGINT,
    columns BIGINT,
    rows BIGINT,
    builtin_assertions BIGINT,
    custom_assertions BIGINT,
    passed_assertions BIGINT,
    failed_assertions BIGINT,
    status TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    country TEXT,
    region TEXT
);
CREATE INDEX events_user ON events (user_id);
CREATE INDEX events_ts ON events (ts);

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    first_seen BIGINT NOT NULL,
    first_day TEXT NOT NULL,
    last_seen BIGINT NOT NULL,
    country TEXT,
    region TEXT,
    os TEXT NOT NULL,
    arch TEXT NOT NULL,
    os_version TEXT NOT NULL,
    device_id TEXT NOT NULL,
    runtime_name TEXT NOT NULL,
    runtime_version TEXT NOT NULL,
    app_version TEXT NOT NULL,
    initial_version TEXT NOT NULL,
    ci TEXT
);
CREATE INDEX users_last_seen ON users (last_seen);
CREATE INDEX users_first_day ON users (first_day);

CREATE TABLE projects (
    project_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    initial_version TEXT NOT NULL,
    current_version TEXT NOT NULL
);
CREATE INDEX projects_user ON projects (user_id);
CREATE INDEX projects_last_seen ON projects (last_seen);

CREATE TABLE project_datasources (
    project_id TEXT NOT NULL,
    datasource_type TEXT NOT NULL,
    PRIMARY KEY (project_id, datasource_type)
);

CREATE TABLE daily_users (
    day TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (day, user_id)
);
CREATE INDEX daily_users_user ON daily_users (user_id);

CREATE TABLE daily_events (
    day TEXT NOT NULL,
    event_type TEXT NOT NULL,
    events BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    tables BIGINT NOT NULL,
    columns BIGINT NOT NULL,
    rows BIGINT NOT NULL,
    builtin_assertions BIGINT NOT NULL,
    custom_assertions BIGINT NOT NULL,
    passed_assertions BIGINT NOT NULL,
    failed_assertions BIGINT NOT NULL,
    PRIMARY KEY (day, event_type)
);

-- Distributions: events per day whose figure falls in a power-of-ten bucket
-- (bucket b holds values from 10^(b-1) to 10^b - 1; bucket 0 holds 0).
CREATE TABLE daily_buckets (
    day TEXT NOT NULL,
    metric TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    events BIGINT NOT NULL,
    PRIMARY KEY (day, metric, bucket)
);

CREATE TABLE quarantine (
    id BIGSERIAL PRIMARY KEY,
    received_at BIGINT NOT NULL,
    field TEXT NOT NULL,
    reason TEXT NOT NULL,
    size BIGINT NOT NULL,
    excerpt TEXT NOT NULL
);

CREATE TABLE deleted_users (
    user_hash TEXT PRIMARY KEY,
    deleted_at BIGINT NOT NULL
);
