-- A full segment (every dimension set) keeps only day rows: charts under
-- two or more filters read its weeks and months from its days, and each
-- event writes two rows fewer. Its month rows written before are dropped.
DELETE FROM cube_counts WHERE grain = 'm' AND segment IN (
    SELECT id FROM segments
    WHERE os <> '' AND app_version <> '' AND datasource_type <> '' AND ci <> '' AND country <> ''
);
DELETE FROM cube_sketches WHERE grain = 'm' AND segment IN (
    SELECT id FROM segments
    WHERE os <> '' AND app_version <> '' AND datasource_type <> '' AND ci <> '' AND country <> ''
);
