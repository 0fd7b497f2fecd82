//! Export and import: every table that holds telemetry, as newline-delimited
//! JSON, between any two databases this service runs on.
//!
//! The file is one JSON object per line: a header
//! (`{"format":"piperider-ingest-export","version":1}`), then one line per
//! row (`{"table":"users","row":{...}}`), then a trailer with the number of
//! rows (`{"end":true,"rows":N}`), so a cut-off file is refused instead of
//! half imported. Raw CLI events come last, those already in the rollups
//! before those not yet (`"rolled_up":false`, a live SQLite writer holds
//! rollups back up to five seconds, PostgreSQL's roller works from a queue):
//! the importer hands the latter to the target's own roll-up path, so
//! every event is counted once.
//!
//! What travels: raw CLI events, users, projects and their data sources,
//! the rollups, the owner keys, the deletion tombstones, Cloud events, the
//! consent audit trail and the chained consent records (with the anchor
//! they verify from), and the two secrets the data depends on (the salt
//! of the tombstones' user hashes, and the consent cookies' key). What does
//! not: the quarantine of refused events (diagnostics) and the SQLite
//! writer's bookkeeping.
//!
//! Importing is idempotent: every row is inserted unless its key is there
//! (`ON CONFLICT DO NOTHING`). It refuses a target that already holds data
//! under another salt: its tombstones would no longer match anyone.

use std::io::{BufRead, Read, Write};

use futures_util::TryStreamExt;
use serde_json::{Map, Value, json};
use sqlx::Row;

use super::error::StorageError;
use super::{Backend, hex, on_pool, open_backend, schema};

/// A table that travels: its name and its columns with their kind
/// (`text` or `int`, the same on both databases), in the order written.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, &'static str)],
}

const INT: &str = "int";

/// The table the storage layer writes through `upsert`.
const fn written(upsert: &schema::Upsert) -> Table {
    Table {
        name: upsert.table,
        columns: upsert.columns,
    }
}

/// Every exported table, in the order written (and imported). Those the
/// writers fill take their columns from [`schema`]; the rest are listed here.
const TABLES: &[Table] = &[
    written(&schema::USERS),
    written(&schema::PROJECTS),
    written(&schema::DATASOURCES),
    written(&schema::OWNER_KEYS),
    Table {
        name: "deleted_users",
        columns: &[
            ("user_hash", "text"),
            ("deleted_at", INT),
            ("owner_key", "text"),
        ],
    },
    written(&schema::DAILY_USERS),
    written(&schema::DAILY_EVENTS),
    written(&schema::DAILY_BUCKETS),
    Table {
        name: "cloud_events",
        columns: &[
            ("event_id", "text"),
            ("received_at", INT),
            ("ts", INT),
            ("day", "text"),
            ("event_type", "text"),
            ("visitor_id", "text"),
            ("route", "text"),
            ("sources", "text"),
            ("metric", "text"),
        ],
    },
    Table {
        name: "consent_audit",
        columns: &[
            ("consent_id", "text"),
            ("decided_at", INT),
            ("day", "text"),
            ("choice", "text"),
            ("policy_version", INT),
            ("gpc", INT),
            ("source", "text"),
        ],
    },
    Table {
        name: "consent_records",
        columns: &[
            ("seq", INT),
            ("consent_id", "text"),
            ("decided_at", INT),
            ("kind", "text"),
            ("policy_version", INT),
            ("banner_hash", "text"),
            ("gpc", INT),
            ("source", "text"),
            ("expires_at", INT),
            ("prev_hash", "text"),
            ("hash", "text"),
        ],
    },
    Table {
        name: "segments",
        columns: &[
            ("id", INT),
            ("os", "text"),
            ("app_version", "text"),
            ("datasource_type", "text"),
            ("ci", "text"),
            ("country", "text"),
        ],
    },
    Table {
        name: "cube_counts",
        columns: &[
            ("grain", "text"),
            ("segment", INT),
            ("period", "text"),
            ("event_type", "text"),
            ("events", INT),
            ("errors", INT),
            ("tables", INT),
            ("columns", INT),
            ("rows", INT),
            ("builtin_assertions", INT),
            ("custom_assertions", INT),
            ("passed_assertions", INT),
            ("failed_assertions", INT),
            ("durations", BYTES),
        ],
    },
    Table {
        name: "cube_sketches",
        columns: &[
            ("grain", "text"),
            ("kind", "text"),
            ("segment", INT),
            ("period", "text"),
            ("sketch", BYTES),
        ],
    },
    Table {
        name: "cohort_sketches",
        columns: &[
            ("segment", INT),
            ("cohort", "text"),
            ("week", "text"),
            ("sketch", BYTES),
        ],
    },
    written(&schema::EVENTS),
];

/// Binary columns (the cube's sketches and histograms), as hex in the file.
const BYTES: &str = "bytes";

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

const EVENTS: &str = "events";
/// The settings that travel: the data cannot be read right without them.
const SETTINGS: [&str; 3] = [
    "user_hash_salt",
    "consent_cookie_secret",
    "consent_chain_anchor",
];
const FORMAT: &str = "piperider-ingest-export";
const SALT: &str = "user_hash_salt";
/// Rows imported per transaction.
const CHUNK: usize = 1_000;
/// The longest line an import reads (a row is far smaller).
const MAX_LINE: usize = 1024 * 1024;

/// Why an export or import stopped. An import error names the line and
/// never repeats its content.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Reading the input or writing the output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The input is not an export this version reads.
    #[error("line {line}: {reason}")]
    Input {
        /// 1-based.
        line: u64,
        /// What is wrong, without the line's content.
        reason: String,
    },
}

impl From<sqlx::Error> for TransferError {
    fn from(e: sqlx::Error) -> Self {
        TransferError::Storage(StorageError::from(e))
    }
}

fn bad(line: u64, reason: impl Into<String>) -> TransferError {
    TransferError::Input {
        line,
        reason: reason.into(),
    }
}

/// Every column of `table`, integers as BIGINT (PostgreSQL keeps a shard
/// as INTEGER).
fn select(table: &Table, filter: &str, extra: &str) -> String {
    let mut columns: Vec<String> = table
        .columns
        .iter()
        .map(|(c, kind)| match *kind {
            INT => format!("CAST({c} AS BIGINT) AS {c}"),
            _ => (*c).to_string(),
        })
        .collect();
    if !extra.is_empty() {
        columns.push(extra.to_string());
    }
    format!("SELECT {} FROM {} {filter}", columns.join(", "), table.name)
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Rows written (the header and trailer not counted).
    pub rows: u64,
}

/// Writes every table of the database at `url` to `out`, from one
/// snapshot, one row at a time.
pub async fn export(url: &str, out: &mut dyn Write) -> Result<ExportReport, TransferError> {
    let db = open_backend(url).await?;
    let mut rows = 0u64;
    writeln!(out, "{}", json!({"format": FORMAT, "version": 1}))?;
    macro_rules! dump {
        ($pool:expr, $snapshot:expr, $rolled:expr, $unrolled:expr, $in_cube:expr) => {{
            let mut tx = $pool.begin().await?;
            sqlx::query($snapshot).execute(&mut *tx).await?;
            let keys: Vec<(String, String)> =
                sqlx::query_as("SELECT key, value FROM settings").fetch_all(&mut *tx).await?;
            for (key, value) in keys.into_iter().filter(|(k, _)| SETTINGS.contains(&k.as_str())) {
                let row = json!({"table": "settings", "row": {"key": key, "value": value}});
                writeln!(out, "{row}")?;
                rows += 1;
            }
            for table in TABLES {
                let passes: Vec<(String, Option<bool>)> = if table.name == EVENTS {
                    vec![(select(table, $rolled, $in_cube), Some(true)), (select(table, $unrolled, ""), Some(false))]
                } else {
                    vec![(select(table, "", ""), None)]
                };
                for (sql, rolled_up) in passes {
                    let mut stream = sqlx::query(&sql).fetch(&mut *tx);
                    while let Some(r) = stream.try_next().await? {
                        let mut row = Map::new();
                        for (column, kind) in table.columns {
                            let value = match *kind {
                                INT => json!(r.try_get::<Option<i64>, _>(*column)?),
                                BYTES => json!(r.try_get::<Option<Vec<u8>>, _>(*column)?.map(|b| hex(&b))),
                                _ => json!(r.try_get::<Option<String>, _>(*column)?),
                            };
                            row.insert((*column).to_string(), value);
                        }
                        let mut line = json!({"table": table.name, "row": row});
                        if let Some(rolled) = rolled_up {
                            line["rolled_up"] = json!(rolled);
                            // In the other rollups, not yet in the dashboard's cube
                            // (a live SQLite writer holds it back up to 15 s).
                            if rolled && r.try_get::<i64, _>("in_cube").is_ok_and(|c| c == 0) {
                                line["in_cube"] = json!(false);
                            }
                        }
                        writeln!(out, "{line}")?;
                        rows += 1;
                    }
                }
            }
            tx.commit().await?;
        }};
    }
    match &db {
        Backend::Sqlite(pool) => dump!(
            pool,
            "SELECT 1",
            "WHERE rowid <= (SELECT COALESCE(MAX(CAST(value AS INTEGER)), 0) FROM settings WHERE key = 'rollup_watermark') ORDER BY rowid",
            "WHERE rowid > (SELECT COALESCE(MAX(CAST(value AS INTEGER)), 0) FROM settings WHERE key = 'rollup_watermark') ORDER BY rowid",
            "CAST(rowid <= (SELECT COALESCE(MAX(CAST(value AS INTEGER)), 0) FROM settings WHERE key = 'cube_watermark') AS BIGINT) AS in_cube"
        ),
        Backend::Postgres(pool) => dump!(
            pool,
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "e WHERE NOT EXISTS (SELECT 1 FROM rollup_queue q WHERE q.event_id = CAST(e.event_id AS uuid))",
            "e WHERE EXISTS (SELECT 1 FROM rollup_queue q WHERE q.event_id = CAST(e.event_id AS uuid))",
            "CAST(1 AS BIGINT) AS in_cube"
        ),
    }
    writeln!(out, "{}", json!({"end": true, "rows": rows}))?;
    out.flush()?;
    on_pool!(&db, pool => pool.close().await);
    Ok(ExportReport { rows })
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Rows read.
    pub rows: u64,
    /// Rows inserted (the rest were there already).
    pub inserted: u64,
    /// Events (into PostgreSQL) that were in the source's other rollups but
    /// not yet in its dashboard cube (a live SQLite writer holds the cube
    /// back up to 15 s): counted everywhere but the dashboard's charts.
    /// Export from a stopped service to have none.
    pub outside_cube: u64,
}

/// One parsed row line: the table, its values in column order, and for
/// an event whether it is in the source's rollups.
struct Parsed {
    table: &'static Table,
    values: Vec<Value>,
    rolled_up: bool,
    /// In the source's dashboard cube too (which a live SQLite writer
    /// holds back a little longer than the other rollups).
    in_cube: bool,
}

impl Parsed {
    /// The text of one of its columns ("" when it has none there).
    fn text(&self, column: &str) -> String {
        let i = self.table.columns.iter().position(|(c, _)| *c == column);
        i.and_then(|i| self.values[i].as_str())
            .unwrap_or_default()
            .to_string()
    }
}

fn parse_row(line: u64, v: &Value) -> Result<Parsed, TransferError> {
    let name = v["table"]
        .as_str()
        .ok_or_else(|| bad(line, "no \"table\""))?;
    let row = v["row"]
        .as_object()
        .ok_or_else(|| bad(line, "no \"row\" object"))?;
    if name == "settings" {
        let key = row.get("key").and_then(Value::as_str);
        if !key.is_some_and(|k| SETTINGS.contains(&k))
            || !row.get("value").is_some_and(Value::is_string)
        {
            return Err(bad(line, "a setting that does not travel"));
        }
        return Ok(Parsed {
            table: &SETTINGS_TABLE,
            values: vec![row["key"].clone(), row["value"].clone()],
            rolled_up: true,
            in_cube: true,
        });
    }
    let table = TABLES
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| bad(line, "an unknown table"))?;
    if row.len() != table.columns.len() {
        return Err(bad(
            line,
            format!("a {name} row must have {} columns", table.columns.len()),
        ));
    }
    let mut values = Vec::with_capacity(table.columns.len());
    for (column, kind) in table.columns {
        let value = row
            .get(*column)
            .ok_or_else(|| bad(line, format!("{name}.{column} is missing")))?;
        let fits = match *kind {
            INT => value.is_null() || value.is_i64(),
            BYTES => value.is_null() || value.as_str().is_some_and(|h| unhex(h).is_some()),
            _ => value.is_null() || value.is_string(),
        };
        if !fits {
            return Err(bad(line, format!("{name}.{column} has the wrong type")));
        }
        values.push(value.clone());
    }
    let flag = |name: &str| match v.get(name) {
        None => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(line, format!("\"{name}\" must be true or false"))),
    };
    let rolled_up = flag("rolled_up")?;
    let in_cube = flag("in_cube")? && rolled_up;
    Ok(Parsed {
        table,
        values,
        rolled_up,
        in_cube,
    })
}

const SETTINGS_TABLE: Table = Table {
    name: "settings",
    columns: &[("key", "text"), ("value", "text")],
};

fn insert_sql(table: &Table) -> String {
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let values: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
        table.name,
        columns.join(", "),
        values.join(", ")
    )
}

/// Reads an export from `input` into the database at `url`. Run it with
/// no service writing to that database.
pub async fn import(url: &str, input: &mut dyn BufRead) -> Result<ImportReport, TransferError> {
    let db = open_backend(url).await?;
    let mut report = ImportReport::default();
    let mut line_no = 0u64;
    let mut text = String::new();
    let mut next_line = |text: &mut String, line_no: &mut u64| -> Result<bool, TransferError> {
        text.clear();
        let read = Read::take(&mut *input, MAX_LINE as u64 + 1).read_line(text)?;
        *line_no += 1;
        if read > MAX_LINE {
            return Err(bad(*line_no, format!("longer than {MAX_LINE} bytes")));
        }
        Ok(read > 0)
    };
    if !next_line(&mut text, &mut line_no)? {
        return Err(bad(1, "empty: not an export"));
    }
    let header: Value = serde_json::from_str(&text).map_err(|_| bad(1, "not JSON"))?;
    if header["format"] != FORMAT || header["version"] != 1 {
        return Err(bad(1, format!("not a {FORMAT} file of version 1")));
    }
    let mut chunk: Vec<Parsed> = Vec::with_capacity(CHUNK);
    let mut ended = None;
    let mut seen_unrolled = false;
    let mut seen_outside_cube = false;
    let mut state = ImportState::default();
    while next_line(&mut text, &mut line_no)? {
        if ended.is_some() {
            return Err(bad(line_no, "a line after the end"));
        }
        let v: Value = serde_json::from_str(&text).map_err(|_| bad(line_no, "not JSON"))?;
        if v["end"] == true {
            ended = Some(
                v["rows"]
                    .as_u64()
                    .ok_or_else(|| bad(line_no, "the end has no row count"))?,
            );
            continue;
        }
        let parsed = parse_row(line_no, &v)?;
        if parsed.table.name == EVENTS {
            if parsed.rolled_up && seen_unrolled {
                return Err(bad(
                    line_no,
                    "an event in the rollups after one that is not",
                ));
            }
            seen_unrolled |= !parsed.rolled_up;
            if parsed.in_cube && seen_outside_cube {
                return Err(bad(
                    line_no,
                    "an event in the dashboard's cube after one that is not",
                ));
            }
            seen_outside_cube |= !parsed.in_cube;
        }
        if parsed.table.name == "settings" && parsed.values[0] == SALT {
            check_salt(&db, line_no, parsed.values[1].as_str().unwrap_or("")).await?;
        }
        report.rows += 1;
        chunk.push(parsed);
        if chunk.len() >= CHUNK {
            report.inserted += write_chunk(&db, &mut chunk, &mut state).await?;
        }
    }
    match ended {
        None => {
            return Err(bad(
                line_no,
                "the file ends without its last line: cut off?",
            ));
        }
        Some(n) if n != report.rows => {
            return Err(bad(
                line_no,
                format!("the file says {n} rows; it has {}", report.rows),
            ));
        }
        Some(_) => {}
    }
    report.inserted += write_chunk(&db, &mut chunk, &mut state).await?;
    finish(&db, &state).await?;
    report.outside_cube = state.outside_cube;
    on_pool!(&db, pool => pool.close().await);
    Ok(report)
}

/// What the import tracks across chunks.
#[derive(Debug, Default)]
struct ImportState {
    /// SQLite: the last rowid of an event inserted as already rolled up.
    last_rolled_rowid: Option<i64>,
    /// PostgreSQL: events inserted as rolled up but not in the cube.
    outside_cube: u64,
    /// SQLite: the last rowid of an event inserted as in the cube.
    last_cube_rowid: Option<i64>,
    /// Whether the file holds the cube's tables (an export from before
    /// the cube does not: the target's writer builds it from the events).
    saw_cube: bool,
    /// PostgreSQL: the months of events whose partitions are made.
    months: std::collections::BTreeSet<chrono::NaiveDate>,
}

/// Refuses a target holding data under another salt; an empty target
/// takes the export's (and its consent key, written with it).
async fn check_salt(db: &Backend, line: u64, salt: &str) -> Result<(), TransferError> {
    macro_rules! check {
        ($pool:expr) => {{
            let current: Option<String> =
                sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                    .bind(SALT)
                    .fetch_optional($pool)
                    .await?;
            if current.as_deref() == Some(salt) {
                return Ok(());
            }
            let held: i64 = sqlx::query_scalar(
                "SELECT (SELECT COUNT(*) FROM users) + (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM deleted_users)",
            )
            .fetch_one($pool)
            .await?;
            if held > 0 {
                return Err(bad(
                    line,
                    "the target database holds data under another user-hash salt; import into an empty database",
                ));
            }
            // Empty: the export's secrets replace the ones made at its first start.
            sqlx::query("DELETE FROM settings WHERE key = $1 OR key = $2 OR key = $3")
                .bind(SETTINGS[0])
                .bind(SETTINGS[1])
                .bind(SETTINGS[2])
                .execute($pool)
                .await?;
            Ok(())
        }};
    }
    match db {
        Backend::Sqlite(pool) => check!(pool),
        Backend::Postgres(pool) => check!(pool),
    }
}

/// A row's insert with its values bound, for either database.
macro_rules! bound {
    ($sql:expr, $p:expr) => {{
        let mut q = sqlx::query($sql);
        for (value, (_, kind)) in $p.values.iter().zip($p.table.columns) {
            q = match *kind {
                INT => q.bind(value.as_i64()),
                BYTES => q.bind(value.as_str().and_then(unhex)),
                _ => q.bind(value.as_str().map(str::to_string)),
            };
        }
        q
    }};
}

/// Inserts `chunk` in one transaction; returns how many rows were new.
async fn write_chunk(
    db: &Backend,
    chunk: &mut Vec<Parsed>,
    state: &mut ImportState,
) -> Result<u64, TransferError> {
    let mut inserted = 0;
    state.saw_cube |= chunk
        .iter()
        .any(|p| p.table.name.starts_with("cube_") || p.table.name == "segments");
    // Each new row counted, then `$after` run on it.
    macro_rules! insert_all {
        ($pool:expr, |$p:ident, $done:ident, $tx:ident| $after:block) => {{
            let mut $tx = $pool.begin().await?;
            for $p in chunk.iter() {
                let sql = insert_sql($p.table);
                let $done = bound!(&sql, $p).execute(&mut *$tx).await?;
                if $done.rows_affected() == 0 {
                    continue;
                }
                inserted += 1;
                $after
            }
            $tx.commit().await?;
        }};
    }
    match db {
        Backend::Sqlite(pool) => insert_all!(pool, |p, done, tx| {
            // An event not in the rollups stays past the watermark: the
            // writer rolls it up when it opens.
            if p.table.name == EVENTS && p.rolled_up {
                state.last_rolled_rowid = Some(done.last_insert_rowid());
            }
            if p.table.name == EVENTS && p.in_cube {
                state.last_cube_rowid = Some(done.last_insert_rowid());
            }
        }),
        Backend::Postgres(pool) => {
            // Each month's events go straight to its partition.
            for p in chunk.iter().filter(|p| p.table.name == EVENTS) {
                let Some(first) = super::partitions::first_of_month(&p.text("day")) else {
                    continue;
                };
                if state.months.insert(first) {
                    super::partitions::prepare_range(pool, first, first).await?;
                }
            }
            insert_all!(pool, |p, _done, tx| {
                if p.table.name == EVENTS && p.rolled_up && !p.in_cube {
                    state.outside_cube += 1;
                }
                // An event not in the rollups goes to the roller's queue.
                if p.table.name == EVENTS && !p.rolled_up {
                    sqlx::query(
                    "INSERT INTO rollup_queue (event_id, day) VALUES (CAST($1 AS uuid), CAST(NULLIF($2, '') AS date))",
                )
                .bind(p.text("event_id"))
                .bind(p.text("day"))
                .execute(&mut *tx)
                .await?;
                }
            })
        }
    }
    chunk.clear();
    Ok(inserted)
}

/// SQLite: the writer's watermarks past the events imported as rolled up
/// and as in the cube (the writer rolls up the rest when it opens).
/// PostgreSQL: segment ids imported as they were, the sequence past them.
async fn finish(db: &Backend, state: &ImportState) -> Result<(), TransferError> {
    match db {
        Backend::Sqlite(pool) => {
            let mut marks = vec![("rollup_watermark", state.last_rolled_rowid)];
            if state.saw_cube {
                marks.push(("cube_watermark", Some(state.last_cube_rowid.unwrap_or(0))));
            }
            for (key, rowid) in marks {
                let Some(rowid) = rowid else { continue };
                let current: Option<String> =
                    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                        .bind(key)
                        .fetch_optional(pool)
                        .await?;
                let current = current.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(current.max(rowid).to_string())
                .execute(pool)
                .await?;
            }
        }
        Backend::Postgres(pool) => {
            sqlx::query(
                "SELECT setval(pg_get_serial_sequence('segments', 'id'), COALESCE((SELECT MAX(id) FROM segments), 0) + 1, false)",
            )
            .execute(pool)
            .await?;
            // The imported months' events wait in the default partition: each month gets its own.
            super::partitions::prepare(pool, chrono::Utc::now()).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_checked_against_the_tables_and_errors_name_the_line_only() {
        let row = |v: Value| parse_row(7, &v).err().map(|e| e.to_string());
        assert_eq!(
            row(json!({"table": "users; DROP TABLE users", "row": {}})),
            Some("line 7: an unknown table".into())
        );
        assert_eq!(
            row(json!({"table": "daily_users", "row": {"day": "2026-12-01", "user_id": 5}})),
            Some("line 7: daily_users.user_id has the wrong type".into())
        );
        assert_eq!(
            row(json!({"table": "settings", "row": {"key": "rollup_watermark", "value": "9"}})),
            Some("line 7: a setting that does not travel".into())
        );
        assert!(
            row(json!({"table": "daily_users", "row": {"day": "2026-12-01", "user_id": "u"}}))
                .is_none()
        );
    }
}
