-- The dashboard's rollups (src/storage/cube.rs): per period and segment,
-- so that a chart reads a few rows per day, week or month however many
-- users there are. A segment is one combination of platform, app version,
-- data source type, CI or not and country; '' stands for any value.
CREATE TABLE segments (
    id INTEGER PRIMARY KEY,
    os TEXT NOT NULL,
    app_version TEXT NOT NULL,
    datasource_type TEXT NOT NULL,
    ci TEXT NOT NULL,
    country TEXT NOT NULL,
    UNIQUE (os, app_version, datasource_type, ci, country)
);
-- grain: 'd' (period YYYY-MM-DD), 'w' (the ISO week's Monday), 'm' (YYYY-MM).
-- durations: a histogram (src/storage/sketch.rs).
CREATE TABLE cube_counts (
    grain TEXT NOT NULL,
    segment INTEGER NOT NULL,
    period TEXT NOT NULL,
    event_type TEXT NOT NULL,
    events INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    tables INTEGER NOT NULL,
    columns INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    builtin_assertions INTEGER NOT NULL,
    custom_assertions INTEGER NOT NULL,
    passed_assertions INTEGER NOT NULL,
    failed_assertions INTEGER NOT NULL,
    durations BLOB NOT NULL,
    PRIMARY KEY (grain, segment, period, event_type)
);
-- kind: 'u' active users, 'n' users first seen in the period, 'p' active
-- projects. sketch: keyed hashes or HyperLogLog registers, never an id.
CREATE TABLE cube_sketches (
    grain TEXT NOT NULL,
    kind TEXT NOT NULL,
    segment INTEGER NOT NULL,
    period TEXT NOT NULL,
    sketch BLOB NOT NULL,
    PRIMARY KEY (grain, kind, segment, period)
);
-- Users first seen in the week 'cohort' who were active in 'week'.
CREATE TABLE cohort_sketches (
    segment INTEGER NOT NULL,
    cohort TEXT NOT NULL,
    week TEXT NOT NULL,
    sketch BLOB NOT NULL,
    PRIMARY KEY (segment, cohort, week)
);
