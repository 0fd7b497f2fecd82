-- A dense sketch (16 KiB of registers) is read whole by every chart that
-- covers its period; compressed, each read decompressed it first, a fifth
-- of a year-long chart's time at a million users. Stored out of line and
-- uncompressed instead (rows written from now on; a row is rewritten
-- whenever its period gets events). Sparse sketches are small and stay in
-- line as before.
ALTER TABLE cube_sketches ALTER COLUMN sketch SET STORAGE EXTERNAL;
ALTER TABLE cohort_sketches ALTER COLUMN sketch SET STORAGE EXTERNAL;
