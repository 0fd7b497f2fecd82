//! PostgreSQL: a few async writer tasks overlapping their transactions.
//! Each has its own queue, and a request goes to the one its user hashes
//! to. A group's transaction stores its events and queues their ids in
//! `rollup_queue`; the rollups are written by the roller ([`roll_up`]),
//! about once a second and before every read of them, many groups at once
//! and off the acknowledgement path, as the SQLite writer holds them back.
//! The roller takes the rows its own process stored from memory
//! ([`Recent`]) and reads back only the others.
//! Rows travel as one binary array per column (`UNNEST`). A group whose
//! events are all new (the usual case) is one statement, so one round trip
//! and one commit ([`write_new`]); any other group takes a transaction of a
//! statement per table. Deletions run straight on the pool, within the
//! request.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use super::cube;
use super::error::StorageError;
use super::group::{CommitMetrics, Group, Job, QUEUE, Written, gather, isolate, outcomes, settle};
use super::rollup::Aggregate;
use super::rows::{Cell, EventRow, owner_rows};
use super::schema::{
    DELETE_USER, DELETE_USER_EVENTS_POSTGRES, DELETE_USER_QUARANTINE, EVENTS, OWNER_KEYS,
    PRUNE_QUARANTINE, QUARANTINE, QUARANTINE_KEEP, REMEMBER_DELETED_USER, Upsert,
};

/// PostgreSQL transactions in flight at once. Two, not four, since the
/// roller no longer reads the events back: each group is then twice as
/// large, and single events went from 1.10–1.24 to 1.32–1.36 of
/// PostgreSQL's own single-row inserts (`docs/benchmarks.md`).
pub(crate) const WRITERS: usize = 2;

/// The pool's settings, and every connection's.
fn pool_options(
    url: &str,
) -> Result<(PgPoolOptions, sqlx::postgres::PgConnectOptions), StorageError> {
    use std::str::FromStr;
    // Every execution is planned for its own arrays: a plan kept from when
    // `events` was small scans the table for the ids a group brings.
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?
        .options([("plan_cache_mode", "force_custom_plan")]);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5));
    Ok((pool, options))
}

/// Connects, runs the embedded migrations and prepares the partitions of
/// `events` ([`super::partitions::prepare`]; when that fails, as when a
/// lock is not had in time, the rows wait in the default partition for
/// the next maintenance pass).
pub(crate) async fn connect(url: &str) -> Result<PgPool, StorageError> {
    let (pool, options) = pool_options(url)?;
    let pool = pool.connect_with(options).await?;
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    if let Err(e) = super::partitions::prepare(&pool, chrono::Utc::now()).await {
        tracing::warn!(error = %e, "events: preparing the partitions failed; the next maintenance pass retries");
    }
    Ok(pool)
}

/// A pool that connects when first used, with no migrations (a node in
/// queue mode: the writers migrate, and the database may be away).
pub(crate) fn connect_lazy(url: &str) -> Result<PgPool, StorageError> {
    let (pool, options) = pool_options(url)?;
    Ok(pool.connect_lazy_with(options))
}

/// A replica's pool for reads: it connects when first used, gives up on a
/// connection sooner than the primary's (the reads then go to the primary)
/// and runs no migrations.
pub(crate) fn connect_replica(url: &str) -> Result<PgPool, StorageError> {
    let (pool, options) = pool_options(url)?;
    Ok(pool
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(options))
}

/// The writer tasks' own pool on `pool`'s database. Its prepared
/// statements get the server's usual choice between a plan made once
/// (generic) and one made per execution: planning the multi-row insert
/// afresh for every group, as `pool` does, was about a quarter of the
/// server's time with single-event requests. Sequential scans are ruled
/// out there, so a generic plan made while a table was small still finds
/// ids by index once it is large (every lookup these statements make has
/// an index; a table's plans are remade when its statistics change).
fn writers_pool(pool: &PgPool) -> PgPool {
    // Later startup options win over the pool's own.
    let options = (*pool.connect_options())
        .clone()
        .options([("plan_cache_mode", "auto"), ("enable_seqscan", "off")]);
    PgPoolOptions::new()
        .max_connections(WRITERS as u32)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options)
}

/// Starts the writer tasks (on a pool of their own, [`writers_pool`]);
/// they stop once their queues are closed and drained.
pub(crate) fn start(
    pool: &PgPool,
    metrics: &CommitMetrics,
    recent: &Arc<Recent>,
) -> (Vec<mpsc::Sender<Job>>, Vec<tokio::task::JoinHandle<()>>) {
    let pool = writers_pool(pool);
    let mut queues = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..WRITERS {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE / WRITERS);
        queues.push(tx);
        handles.push(tokio::spawn(serve(
            pool.clone(),
            rx,
            metrics.clone(),
            recent.clone(),
        )));
    }
    (queues, handles)
}

async fn serve(
    pool: PgPool,
    mut rx: mpsc::Receiver<Job>,
    metrics: CommitMetrics,
    recent: Arc<Recent>,
) {
    let mut carried: Option<Job> = None;
    loop {
        let job = match carried.take() {
            Some(job) => Some(job),
            None => rx.recv().await,
        };
        let first = match job {
            Some(Job::Store(batch)) => batch,
            // Every group that began before this job has committed.
            Some(Job::Barrier(reply)) => {
                let _ = reply.send(());
                continue;
            }
            Some(Job::Stop) | None => return,
            // Flushes and deletions go straight to PostgreSQL.
            Some(_) => continue,
        };
        let (jobs, next) = gather(first, || rx.try_recv().ok());
        let group = Group::of(&jobs);
        let result = write(&pool, &group).await;
        recent.add(&group, &result);
        let (size, started) = (group.events.len(), group.started);
        drop(group);
        if isolate(&jobs, &result) {
            for job in jobs {
                let jobs = vec![job];
                let group = Group::of(&jobs);
                let result = write(&pool, &group).await;
                recent.add(&group, &result);
                let (size, started) = (group.events.len(), group.started);
                drop(group);
                settle(jobs, result, &metrics, size, started);
            }
        } else {
            settle(jobs, result, &metrics, size, started);
        }
        carried = next;
    }
}

/// Queues the rollups of newly stored events (`$1` their ids, `$2` their days).
const QUEUE_ROLLUPS: &str = "INSERT INTO rollup_queue (event_id, day) \
     SELECT CAST(id AS uuid), CAST(day AS date) FROM UNNEST(CAST($1 AS TEXT[]), CAST($2 AS TEXT[])) AS q(id, day)";

/// Takes a user's queued ids out of the queue (`$1`, the user id).
const UNQUEUE_USER: &str = "DELETE FROM rollup_queue WHERE CAST(event_id AS text) IN \
     (SELECT event_id FROM events WHERE user_id = $1)";

/// Most queued events one roll-up takes (then it takes the next ones).
const ROLL_UP_EVENTS: i64 = 10_000;

/// How often the roller writes the rollups while events keep coming.
const ROLL_UP_INTERVAL: Duration = Duration::from_secs(1);

/// Takes up to [`ROLL_UP_EVENTS`] queued ids and adds their events to the
/// rollups, in one transaction: an id leaves the queue exactly when its
/// event is counted. Ids of a user deleted since leave without counting
/// (a deletion takes them out of the queue, or the tombstone is found
/// here); so do the ids of raw events expired since that are read back
/// rather than held in [`Recent`] (retention rolls up before it deletes,
/// so these are only events that arrived during its pass, already past
/// retention). It also takes as many ids of events
/// stored before the cube (`cube_queue`) and adds them to the cube alone.
/// Returns the larger number of ids it took from either queue.
async fn roll_up_some(
    pool: &PgPool,
    cube: &mut CubeWriter,
    recent: &Recent,
) -> Result<usize, StorageError> {
    let mut tx = pool.begin().await?;
    let taken = take(&mut tx, "rollup_queue").await?;
    let backfill = take(&mut tx, "cube_queue").await?;
    let most = taken.len().max(backfill.len());
    if most == 0 {
        return Ok(0);
    }
    let mut rollup = Aggregate::default();
    let mut events = cube::Cube::default();
    for (taken, rolled) in [(taken, true), (backfill, false)] {
        // The rows this process stored are at hand; the others are read.
        let (mut rows, taken) = if rolled {
            recent.take(taken)
        } else {
            (Vec::new(), taken)
        };
        if !taken.is_empty() {
            rows.extend(read_events(&mut tx, &taken).await?);
        }
        if rows.is_empty() {
            continue;
        }
        if rolled {
            let deleted = delete_late_events(&mut tx, &cube.salt, &rows).await?;
            rows.retain(|e| !deleted.contains(&e.user_id));
        }
        for event in &rows {
            events.add(event);
            if rolled {
                rollup.add(event);
            }
        }
    }
    for (table, rows) in rollup.tables() {
        upsert(&mut tx, table, &rows).await?;
    }
    if !events.is_empty() {
        let users = events.users();
        let first_days: HashMap<String, String> =
            sqlx::query_as("SELECT user_id, first_day FROM users WHERE user_id = ANY($1)")
                .bind(&users)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let rows = events.rows(&cube.salt, &first_days);
        cube::write_postgres(&mut tx, rows, &mut cube.segment_ids).await?;
    }
    tx.commit().await?;
    Ok(most)
}

/// The stored rows of the events `taken` names (ids, each with its day
/// where the queue has it).
async fn read_events(
    tx: &mut sqlx::PgConnection,
    taken: &[(String, Option<String>)],
) -> Result<Vec<Arc<EventRow>>, StorageError> {
    let ids: Vec<&str> = taken.iter().map(|(id, _)| id.as_str()).collect();
    // Only the partitions of their days, when every id came with its day.
    let days: Option<Vec<&str>> = taken.iter().map(|(_, day)| day.as_deref()).collect();
    let (from, to) = days
        .and_then(|days| Some((*days.iter().min()?, *days.iter().max()?)))
        .unwrap_or(EVERY_DAY);
    let rows = sqlx::query(&format!(
        "SELECT {} FROM events WHERE event_id = ANY($1) AND day >= $2 AND day <= $3",
        EVENTS.names()
    ))
    .bind(&ids)
    .bind(from)
    .bind(to)
    .fetch_all(tx)
    .await?;
    rows.iter()
        .map(|row| Ok(Arc::new(EventRow::from_sqlx(row)?)))
        .collect()
}

/// Most rows [`Recent`] holds.
const RECENT_ROWS: usize = 16_384;

/// The rows this process's writers stored lately, by event id, for the
/// roller: it takes the rows of the queued ids it finds here, and reads
/// back from the database only the others (stored by another process,
/// before a restart, or past [`RECENT_ROWS`]). Only a shortcut: the queue
/// alone says which events are rolled up, and when, exactly once; a row
/// found here is the row its writer inserted. A row is held for at most
/// two roll-ups: one whose id the roller took before it was added, or that
/// a deletion took out of the queue, is then dropped. Once it is full the
/// roller rolls up without waiting for its interval.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    held: std::sync::Mutex<Generations>,
    full: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Generations {
    /// Added since the last roll-up began.
    current: HashMap<String, Arc<EventRow>>,
    /// Added before it and not taken by it.
    previous: HashMap<String, Arc<EventRow>>,
}

impl Recent {
    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds the events of `group` that `written` says were stored (and
    /// so queued for the roller).
    fn add(&self, group: &Group<'_>, written: &Result<Vec<Written>, StorageError>) {
        let Ok(written) = written else { return };
        let mut held = self.lock();
        for (event, outcome) in group.events.iter().zip(written) {
            if held.current.len() + held.previous.len() >= RECENT_ROWS {
                self.full.notify_one();
                break;
            }
            if *outcome == Written::Accepted {
                held.current
                    .insert(event.event_id.clone(), Arc::clone(event));
            }
        }
    }

    /// The rows held for the ids of `taken`, and the ids not held.
    fn take(&self, taken: Taken) -> (Vec<Arc<EventRow>>, Taken) {
        let mut held = self.lock();
        let mut rows = Vec::with_capacity(taken.len());
        let mut missing = Vec::new();
        for (id, day) in taken {
            let row = held
                .current
                .remove(&id)
                .or_else(|| held.previous.remove(&id));
            match row {
                Some(row) => rows.push(row),
                None => missing.push((id, day)),
            }
        }
        (rows, missing)
    }

    /// At the start of a roll-up: what the last one left is dropped.
    fn age(&self) {
        let mut held = self.lock();
        held.previous = std::mem::take(&mut held.current);
    }
}

/// Deletes the events among `events` (just stored) whose user was deleted
/// meanwhile, with the rest of what is stored about those users; returns
/// their ids. A deletion commits its tombstone before it deletes: an event
/// it did not see was committed after, so its id is still queued here, and
/// this later look at the tombstones sees the deletion, whichever node or
/// writer stored the event and whichever deleted the user.
async fn delete_late_events(
    tx: &mut sqlx::PgConnection,
    salt: &str,
    events: &[Arc<EventRow>],
) -> Result<HashSet<String>, StorageError> {
    let users: HashSet<&str> = events.iter().map(|e| e.user_id.as_str()).collect();
    if users.is_empty() {
        return Ok(HashSet::new());
    }
    let hashes: HashMap<String, &str> = users
        .into_iter()
        .map(|u| (super::hash_user(salt, u), u))
        .collect();
    let wanted: Vec<&str> = hashes.keys().map(String::as_str).collect();
    let found: Vec<String> =
        sqlx::query_scalar("SELECT user_hash FROM deleted_users WHERE user_hash = ANY($1)")
            .bind(&wanted)
            .fetch_all(&mut *tx)
            .await?;
    let mut deleted = HashSet::new();
    for hash in found {
        let Some(&user) = hashes.get(&hash) else {
            continue;
        };
        for sql in std::iter::once(DELETE_USER_EVENTS_POSTGRES).chain(DELETE_USER) {
            sqlx::query(sql).bind(user).execute(&mut *tx).await?;
        }
        tracing::info!("events stored while their user was being deleted were deleted");
        deleted.insert(user.to_string());
    }
    Ok(deleted)
}

/// Ids taken from a queue, each with its event's day where the queue has it.
type Taken = Vec<(String, Option<String>)>;

/// Takes up to [`ROLL_UP_EVENTS`] ids out of `queue` (`rollup_queue`: the
/// events to roll up; `cube_queue`: events stored before the cube, for
/// the cube alone), each with its event's day where the queue has it.
async fn take(tx: &mut sqlx::PgConnection, queue: &str) -> Result<Taken, StorageError> {
    let day = if queue == "rollup_queue" {
        "to_char(day, 'YYYY-MM-DD')"
    } else {
        "CAST(NULL AS TEXT)"
    };
    Ok(sqlx::query_as(&format!(
        "DELETE FROM {queue} WHERE ctid IN (SELECT ctid FROM {queue} LIMIT {ROLL_UP_EVENTS}) \
         RETURNING CAST(event_id AS text), {day}"
    ))
    .fetch_all(tx)
    .await?)
}

/// What the roller keeps between roll-ups for the cube.
#[derive(Debug)]
pub(crate) struct CubeWriter {
    /// Salt of the sketches.
    pub(crate) salt: String,
    /// Segment ids known to be committed.
    pub(crate) segment_ids: HashMap<cube::Segment, i64>,
}

/// Rolls up everything queued when it is called.
pub(crate) async fn roll_up(
    pool: &PgPool,
    cube: &mut CubeWriter,
    recent: &Recent,
) -> Result<(), StorageError> {
    recent.age();
    loop {
        match roll_up_some(pool, cube, recent).await {
            Ok(n) if n as i64 >= ROLL_UP_EVENTS => {}
            Ok(_) => return Ok(()),
            Err(e) => {
                // Ids of segments added by the failed transaction are gone with it.
                cube.segment_ids.clear();
                return Err(e);
            }
        }
    }
}

/// Starts the roller: it rolls up every [`ROLL_UP_INTERVAL`] and when
/// asked ([`Job::Flush`], answered once the rollups include every event
/// stored before), and once more when stopped.
pub(crate) fn start_roller(
    pool: &PgPool,
    salt: &str,
    metrics: &CommitMetrics,
    recent: Arc<Recent>,
) -> (mpsc::Sender<Job>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
    let (pool, backlog) = (pool.clone(), metrics.rollup_backlog.clone());
    let mut cube = CubeWriter {
        salt: salt.to_string(),
        segment_ids: HashMap::new(),
    };
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(ROLL_UP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut replies = Vec::new();
            let mut stop = false;
            tokio::select! {
                _ = tick.tick() => {}
                () = recent.full.notified() => tick.reset(),
                job = rx.recv() => match job {
                    Some(Job::Flush(reply)) => replies.push(reply),
                    Some(_) | None => stop = true,
                },
            }
            // Every flush asked meanwhile is answered by this one roll-up.
            while let Ok(job) = rx.try_recv() {
                match job {
                    Job::Flush(reply) => replies.push(reply),
                    _ => stop = true,
                }
            }
            let result = roll_up(&pool, &mut cube, &recent)
                .await
                .map_err(std::sync::Arc::new);
            if let Err(e) = &result {
                tracing::warn!(error = %e, "rolling up stored events failed; they stay queued");
            }
            if let Ok(left) = sqlx::query_scalar::<_, i64>(
                "SELECT (SELECT count(*) FROM rollup_queue) + (SELECT count(*) FROM cube_queue)",
            )
            .fetch_one(&pool)
            .await
            {
                backlog.set(left);
            }
            for reply in replies {
                let _ = reply.send(result.clone().map_err(|e| e.shared()));
            }
            if stop {
                return;
            }
        }
    });
    (tx, handle)
}

/// `SELECT` of typed columns from one array parameter per column
/// (PostgreSQL's `UNNEST`): a multi-row statement takes its rows as a fixed
/// number of parameters, so its text never changes (it stays prepared in
/// the statement cache), and the arrays travel in PostgreSQL's binary
/// format, with no text to parse.
fn array_sql(upsert: &Upsert) -> String {
    // `WHERE true` keeps a following `ON CONFLICT` from being read as a join's `ON`.
    upsert.sql(&unnest(upsert, 1, "true"))
}

/// `SELECT * FROM UNNEST(<one array per column, from $first>) AS u(<the
/// columns' names>) WHERE <filter>`.
fn unnest(upsert: &Upsert, first: usize, filter: &str) -> String {
    let columns: Vec<String> = upsert
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, t))| {
            let pg = if *t == "int" { "BIGINT[]" } else { "TEXT[]" };
            format!("CAST(${} AS {pg})", first + i)
        })
        .collect();
    format!(
        "SELECT * FROM UNNEST({}) AS u({}) WHERE {filter}",
        columns.join(", "),
        upsert.names()
    )
}

/// The rows as the parameters of [`array_sql`]: one array per column.
fn column_arrays<'a, R: AsRef<[Cell<'a>]>>(
    upsert: &Upsert,
    rows: &'a [R],
) -> Result<PgArguments, StorageError> {
    let mut args = PgArguments::default();
    add_column_arrays(&mut args, upsert, rows)?;
    Ok(args)
}

/// Appends the rows to `args` as one array per column.
fn add_column_arrays<'a, R: AsRef<[Cell<'a>]>>(
    args: &mut PgArguments,
    upsert: &Upsert,
    rows: &'a [R],
) -> Result<(), StorageError> {
    use sqlx::Arguments;
    for (i, (_, kind)) in upsert.columns.iter().enumerate() {
        let added = if *kind == "int" {
            let column: Vec<Option<i64>> = rows.iter().map(|r| r.as_ref()[i].int()).collect();
            args.add(column)
        } else {
            let column: Vec<Option<&str>> = rows.iter().map(|r| r.as_ref()[i].text()).collect();
            args.add(column)
        };
        added.map_err(sqlx::Error::Encode)?;
    }
    Ok(())
}

/// Runs one upsert of `rows` in `tx` (nothing when there are none).
async fn upsert<'a, R: AsRef<[Cell<'a>]>>(
    tx: &mut sqlx::PgConnection,
    upsert: &Upsert,
    rows: &'a [R],
) -> Result<(), StorageError> {
    if !rows.is_empty() {
        sqlx::query_with(&array_sql(upsert), column_arrays(upsert, rows)?)
            .execute(tx)
            .await?;
    }
    Ok(())
}

/// Stores a group of events: in one statement when they are all new
/// ([`write_new`]), else in one transaction: the events of deleted users
/// are dropped, the rest inserted once each (not when their id is stored
/// on a neighbouring day, [`neighbour_days`]), the
/// ids of what was new queued for the roller, and the invalid events
/// quarantined. Nothing is acknowledged before `COMMIT`.
async fn write(pool: &PgPool, group: &Group<'_>) -> Result<Vec<Written>, StorageError> {
    if let Some(written) = write_new(pool, group).await? {
        return Ok(written);
    }
    let mut tx = pool.begin().await?;
    let wanted = group.user_hashes();
    let found: Vec<String> = if wanted.is_empty() {
        Vec::new()
    } else {
        sqlx::query_scalar("SELECT user_hash FROM deleted_users WHERE user_hash = ANY($1)")
            .bind(wanted)
            .fetch_all(&mut *tx)
            .await?
    };
    let deleted: HashSet<&str> = found.iter().map(String::as_str).collect();
    let is_deleted = |e: &super::rows::EventRow| group.is_deleted(e, &deleted);

    let fresh = group.first_of_each(|e| !is_deleted(e));
    let (ids, days): (Vec<String>, Vec<String>) = if fresh.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let rows: Vec<[Cell<'_>; 28]> = fresh.iter().map(|e| e.cells()).collect();
        let (from, to) = neighbour_days(&fresh);
        let mut args = PgArguments::default();
        {
            use sqlx::Arguments;
            args.add(from).map_err(sqlx::Error::Encode)?;
            args.add(to).map_err(sqlx::Error::Encode)?;
        }
        add_column_arrays(&mut args, &EVENTS, &rows)?;
        sqlx::query_as_with::<_, (String, String), _>(insert_events_sql(), args)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .unzip()
    };
    let inserted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    if !ids.is_empty() {
        sqlx::query(QUEUE_ROLLUPS)
            .bind(&ids)
            .bind(&days)
            .execute(&mut *tx)
            .await?;
    }
    let bound = owner_rows(
        fresh
            .iter()
            .filter(|e| inserted.contains(e.event_id.as_str()))
            .map(|e| &***e),
    );
    if !bound.is_empty() {
        upsert(&mut tx, &OWNER_KEYS, &bound).await?;
    }
    if !group.quarantine.is_empty() {
        let rows: Vec<Vec<Cell<'_>>> = group.quarantine.iter().map(|q| q.cells()).collect();
        upsert(&mut tx, &QUARANTINE, &rows).await?;
        sqlx::query(PRUNE_QUARANTINE)
            .bind(QUARANTINE_KEEP)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(outcomes(&group.events, is_deleted, &inserted))
}

/// Bounds on `day` that every stored day lies within: a look at every
/// partition of `events`.
const EVERY_DAY: (&str, &str) = ("0000-01-01", "9999-12-31");

/// The days a copy of `events` may be stored on: a day either side of
/// theirs. An event's day is its timestamp's, or the receiver's when the
/// timestamp is ahead (by at most a day, [`MAX_FUTURE_SKEW`]), so two
/// copies of one event lie at most a day apart. `events` is partitioned
/// by day and unique by (event_id, day): the inserts look on these days
/// for the ids they bring.
///
/// [`MAX_FUTURE_SKEW`]: piperider_event::limits::MAX_FUTURE_SKEW
fn neighbour_days(events: &[&std::sync::Arc<super::rows::EventRow>]) -> (String, String) {
    const _: () = assert!(piperider_event::limits::MAX_FUTURE_SKEW.num_seconds() <= 86_400);
    let parse = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
    let days = events.iter().filter_map(|e| parse(&e.day));
    match (days.clone().min(), days.max()) {
        (Some(first), Some(last)) => (
            (first - chrono::TimeDelta::days(1)).to_string(),
            (last + chrono::TimeDelta::days(1)).to_string(),
        ),
        // No events (or days not written by this service): look everywhere.
        _ => (EVERY_DAY.0.into(), EVERY_DAY.1.into()),
    }
}

/// The insert of [`write`], made once: `$1` and `$2` the days to look on
/// for the ids ([`neighbour_days`]), then one array per column of `events`.
/// Returns the id and day of each event stored.
fn insert_events_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "INSERT INTO events ({}) {} ON CONFLICT (event_id, day) DO NOTHING RETURNING event_id, day",
            EVENTS.names(),
            unnest(
                &EVENTS,
                3,
                "NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = u.event_id \
                 AND e.day >= CAST($1 AS TEXT) AND e.day <= CAST($2 AS TEXT))"
            )
        )
    })
}

/// The statement of [`write_new`], made once: `$1` the group's user hashes,
/// `$2` how many events, `$3` and `$4` the days to look on for the ids
/// ([`neighbour_days`]), then one array per column of `events` and of
/// `owner_keys`. The events go in only when no user of the group asked for
/// deletion and no event id is stored yet, and their ids into
/// `rollup_queue`; the owner keys only when every event went in; a
/// concurrent insert of the same id fails the whole statement (no
/// `ON CONFLICT` on `events`).
fn new_group_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let event_id = 5 + EVENTS
            .columns
            .iter()
            .position(|(name, _)| *name == "event_id")
            .expect("events has event_id");
        let next = 5 + EVENTS.columns.len();
        let mut ctes = vec![format!(
            "ins AS (INSERT INTO events ({}) {} RETURNING event_id, day)",
            EVENTS.names(),
            unnest(
                &EVENTS,
                5,
                &format!(
                    "NOT EXISTS (SELECT 1 FROM deleted_users WHERE user_hash = ANY(CAST($1 AS TEXT[]))) \
                     AND NOT EXISTS (SELECT 1 FROM events WHERE event_id = ANY(CAST(${event_id} AS TEXT[])) \
                     AND day >= CAST($3 AS TEXT) AND day <= CAST($4 AS TEXT))"
                )
            )
        )];
        ctes.push("every AS (SELECT count(*) = CAST($2 AS BIGINT) AS new FROM ins)".into());
        ctes.push(format!(
            "owners AS ({})",
            OWNER_KEYS.sql(&unnest(&OWNER_KEYS, next, "(SELECT new FROM every)"))
        ));
        ctes.push("queued AS (INSERT INTO rollup_queue (event_id, day) SELECT CAST(event_id AS uuid), CAST(day AS date) FROM ins)".into());
        format!("WITH {} SELECT event_id FROM ins", ctes.join(", "))
    })
}

/// A group whose events are all new, in one statement and so one round
/// trip and one commit (no `BEGIN`): the events, their ids queued for the
/// roller, and the owner keys, all or nothing. `None` when the group needs [`write`]'s
/// transaction (events of a deleted user, an event id stored before,
/// invalid events to quarantine), with nothing written.
async fn write_new(pool: &PgPool, group: &Group<'_>) -> Result<Option<Vec<Written>>, StorageError> {
    if !group.quarantine.is_empty() || group.events.is_empty() {
        return Ok(None);
    }
    let fresh = group.first_of_each(|_| true);
    let rows: Vec<[Cell<'_>; 28]> = fresh.iter().map(|e| e.cells()).collect();
    let owners = owner_rows(fresh.iter().map(|e| &***e));
    let mut args = PgArguments::default();
    {
        use sqlx::Arguments;
        args.add(group.user_hashes()).map_err(sqlx::Error::Encode)?;
        args.add(fresh.len() as i64).map_err(sqlx::Error::Encode)?;
        let (from, to) = neighbour_days(&fresh);
        args.add(from).map_err(sqlx::Error::Encode)?;
        args.add(to).map_err(sqlx::Error::Encode)?;
    }
    add_column_arrays(&mut args, &EVENTS, &rows)?;
    add_column_arrays(&mut args, &OWNER_KEYS, &owners)?;
    let ids: Vec<String> = match sqlx::query_scalar_with(new_group_sql(), args)
        .fetch_all(pool)
        .await
    {
        Ok(ids) => ids,
        // Another node stored one of these ids meanwhile: nothing was written.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if ids.len() != fresh.len() {
        return Ok(None);
    }
    let inserted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    Ok(Some(outcomes(&group.events, |_| false, &inserted)))
}

/// Deletes everything stored about one user and remembers the salted hash
/// of the id, so later events for it are dropped. Returns whether anything
/// was stored.
pub(crate) async fn delete_user(
    pool: &PgPool,
    user_id: &str,
    user_hash: &str,
    now_ms: i64,
) -> Result<bool, StorageError> {
    // The tombstone first, committed on its own: a group that stores an
    // event of this user after the deletion below has looked (on any
    // node) queues its id, and the roller that takes it sees the
    // tombstone and deletes the event ([`delete_late_events`]).
    sqlx::query(REMEMBER_DELETED_USER)
        .bind(user_hash)
        .bind(now_ms)
        .bind(user_id)
        .execute(pool)
        .await?;
    let mut tx = pool.begin().await?;
    // First: a roller holding some of these ids waits for it here, so its
    // rollups are committed before they are deleted below.
    sqlx::query(UNQUEUE_USER)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let mut found = 0;
    for sql in std::iter::once(DELETE_USER_EVENTS_POSTGRES).chain(DELETE_USER) {
        found += sqlx::query(sql)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    sqlx::query(DELETE_USER_QUARANTINE)
        .bind(user_hash)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(found > 0)
}

#[cfg(test)]
mod tests {
    use piperider_event::{CliEvent, WireEvent};

    use super::*;
    use crate::storage::group::Batch;

    /// An event of user `n`, with an id of its own.
    fn event(n: u8) -> Arc<EventRow> {
        let now = chrono::Utc::now();
        let raw = piperider_testkit::cli_event(&format!("{n:032x}"), &"a".repeat(32)).to_string();
        let event = CliEvent::parse(raw.as_bytes(), now).unwrap();
        Arc::new(EventRow::new(event, None, None, now.timestamp_millis()))
    }

    fn batch(events: &[&Arc<EventRow>]) -> Vec<Batch> {
        vec![Batch {
            events: events.iter().map(|&e| Arc::clone(e)).collect(),
            hashes: HashMap::new(),
            quarantine: Vec::new(),
            reply: tokio::sync::oneshot::channel().0,
        }]
    }

    /// The ids of `events` as the roller takes them from the queue.
    fn queued(events: &[&Arc<EventRow>]) -> Taken {
        events
            .iter()
            .map(|e| (e.event_id.clone(), Some(e.day.clone())))
            .collect()
    }

    /// The roller finds among the recent rows those its writers stored,
    /// and only those: not a duplicate, not a failed group's; each once;
    /// an id not held is left for the database. A row no roll-up took is
    /// dropped by the second roll-up after it was added. Past
    /// `RECENT_ROWS` nothing more is held, and the roller is called.
    #[tokio::test]
    async fn recent_rows_are_the_stored_ones_each_taken_once_and_held_two_roll_ups() {
        let recent = Recent::default();
        let (a, b, c, d) = (event(1), event(2), event(3), event(4));
        let jobs = batch(&[&a, &b]);
        recent.add(
            &Group::of(&jobs),
            &Ok(vec![Written::Accepted, Written::Duplicate]),
        );
        let jobs = batch(&[&c]);
        recent.add(&Group::of(&jobs), &Err(StorageError::WriterStopped));
        let (held, missing) = recent.take(queued(&[&b, &c, &a]));
        assert!(held.len() == 1 && Arc::ptr_eq(&held[0], &a), "{held:?}");
        assert_eq!(missing, queued(&[&b, &c]));
        let (held, missing) = recent.take(queued(&[&a]));
        assert!(held.is_empty(), "taken twice");
        assert_eq!(missing, queued(&[&a]));

        let jobs = batch(&[&d]);
        recent.add(&Group::of(&jobs), &Ok(vec![Written::Accepted]));
        recent.age();
        let (held, _) = recent.take(queued(&[&d]));
        assert_eq!(held.len(), 1, "dropped by the first roll-up after it");
        recent.add(&Group::of(&jobs), &Ok(vec![Written::Accepted]));
        recent.age();
        recent.age();
        let (held, _) = recent.take(queued(&[&d]));
        assert!(held.is_empty(), "held past two roll-ups");

        let many: Vec<Arc<EventRow>> = (0..=RECENT_ROWS).map(|_| event(5)).collect();
        let jobs = batch(&many.iter().collect::<Vec<_>>());
        recent.add(&Group::of(&jobs), &Ok(vec![Written::Accepted; many.len()]));
        assert_eq!(recent.lock().current.len(), RECENT_ROWS);
        tokio::time::timeout(Duration::from_secs(1), recent.full.notified())
            .await
            .expect("a full cache calls the roller");
    }

    /// The writers' connections plan as the server chooses and never scan
    /// a whole table, whatever the pool they come from sets (their options
    /// come after its own).
    #[tokio::test]
    async fn the_writers_connections_use_generic_plans_and_no_sequential_scans() {
        let url = "postgres://postgres@127.0.0.1:5432/postgres";
        let reachable = std::net::TcpStream::connect("127.0.0.1:5432").is_ok();
        if !reachable {
            assert!(
                std::env::var_os("PIPERIDER_REQUIRE_POSTGRES").is_none(),
                "PostgreSQL is required here but 127.0.0.1:5432 does not answer"
            );
            eprintln!("SKIPPED: PostgreSQL is not reachable on 127.0.0.1:5432");
            return;
        }
        let (pool, options) = pool_options(url).unwrap();
        let pool = pool.connect_lazy_with(options);
        let show = async |pool: &PgPool, name: &str| -> String {
            sqlx::query_scalar(&format!("SHOW {name}"))
                .fetch_one(pool)
                .await
                .unwrap()
        };
        assert_eq!(show(&pool, "plan_cache_mode").await, "force_custom_plan");
        assert_eq!(show(&pool, "enable_seqscan").await, "on");
        let writers = writers_pool(&pool);
        assert_eq!(show(&writers, "plan_cache_mode").await, "auto");
        assert_eq!(show(&writers, "enable_seqscan").await, "off");
        writers.close().await;
        pool.close().await;
    }
}
