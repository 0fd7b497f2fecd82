//! The consent records' chain (`consent_records`): each decision appended
//! with the hash of the one before it (`piperider_consent::chain`), read
//! back page by page, pruned from its start with an anchor kept.
//!
//! Appends are serialized across every node on the database: SQLite's
//! `BEGIN IMMEDIATE` takes the write lock before the chain's head is read,
//! PostgreSQL takes a transaction-level advisory lock.

use piperider_consent::chain::{ChainEntry, ChainLink, DecisionKind, GENESIS};
use sqlx::Row;

use super::error::StorageError;
use super::rows::day;
use super::{Backend, Store, on_pool};

/// The advisory lock key of the chain's appends on PostgreSQL.
const CHAIN_LOCK: i64 = 0x7069_7065_636e_7374; // "pipecnst"
/// The setting that keeps the hash of the last pruned record, `seq:hash`.
const ANCHOR: &str = "consent_chain_anchor";
const COLUMNS: &str = "seq, consent_id, decided_at, kind, policy_version, banner_hash, gpc, source, expires_at, prev_hash, hash";

/// The most records one read returns.
pub const PAGE: usize = 10_000;

fn link_of<R>(r: &R) -> Result<ChainLink, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let kind: String = r.try_get("kind")?;
    Ok(ChainLink {
        entry: ChainEntry {
            seq: r.try_get::<i64, _>("seq")?.max(0) as u64,
            consent_id: r.try_get("consent_id")?,
            decided_at: r.try_get("decided_at")?,
            // An unknown kind cannot verify: read as a withdrawal, the
            // record's hash then does not match and the chain says where.
            kind: DecisionKind::parse(&kind).unwrap_or(DecisionKind::Withdraw),
            policy_version: u32::try_from(r.try_get::<i64, _>("policy_version")?)
                .unwrap_or(u32::MAX),
            banner_hash: r.try_get("banner_hash")?,
            gpc: r.try_get::<i64, _>("gpc")? != 0,
            source: r.try_get("source")?,
            expires_at: r.try_get("expires_at")?,
        },
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

fn parse_anchor(value: Option<String>) -> (u64, String) {
    value
        .and_then(|v| {
            let (seq, hash) = v.split_once(':')?;
            Some((seq.parse().ok()?, hash.to_string()))
        })
        .unwrap_or((0, GENESIS.to_string()))
}

/// One page of the chain, with the anchor it starts from.
#[derive(Debug, Clone)]
pub struct ChainPage {
    /// The sequence number and hash the first record kept links to.
    pub anchor: (u64, String),
    /// Records after the asked one, in order.
    pub links: Vec<ChainLink>,
}

/// Runs the macro `$run` on a transaction that holds the chain's lock on
/// every node: SQLite's write lock, or PostgreSQL's advisory lock.
macro_rules! locked {
    ($store:expr, $run:ident) => {
        match &$store.0.backend {
            Backend::Sqlite(pool) => $run!(pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(CHAIN_LOCK)
                    .execute(&mut *tx)
                    .await?;
                $run!(tx)
            }
        }
    };
}

/// Up to `limit` (at most [`PAGE`]) records after `after`, and the anchor.
async fn chain_page(
    backend: &Backend,
    after: u64,
    limit: usize,
) -> Result<ChainPage, StorageError> {
    let limit = limit.clamp(1, PAGE) as i64;
    on_pool!(backend, pool => {
        let kept: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(ANCHOR)
            .fetch_optional(pool)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM consent_records WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(pool)
        .await?;
        let links = rows.iter().map(link_of).collect::<Result<Vec<_>, _>>()?;
        Ok(ChainPage { anchor: parse_anchor(kept), links })
    })
}

/// Checks the whole chain of the database at `url` page by page from its
/// anchor, reading only (a running service may keep writing). Returns a
/// summary, or where it first breaks.
pub async fn verify_chain(url: &str) -> Result<String, String> {
    let backend = super::open_backend(url).await.map_err(|e| e.to_string())?;
    let result = async {
        let mut page = chain_page(&backend, 0, PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let anchor = page.anchor.clone();
        let mut link_to = anchor.clone();
        let mut checked = 0;
        while let Some(last) = page.links.last().map(|l| (l.entry.seq, l.hash.clone())) {
            checked += piperider_consent::chain::verify((link_to.0, &link_to.1), page.links)
                .map_err(|broken| format!("the consent chain is broken at {broken}"))?;
            link_to = last;
            page = chain_page(&backend, link_to.0, PAGE)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(format!(
            "{checked} consent records hold, from the anchor (record {}, {}) to record {} ({})",
            anchor.0, anchor.1, link_to.0, link_to.1
        ))
    }
    .await;
    on_pool!(&backend, pool => pool.close().await);
    result
}

impl Store {
    /// Appends a decision to the audit trail and to the chain, in one
    /// transaction; returns its chain record.
    pub(crate) async fn append_consent(
        &self,
        record: &piperider_consent::ConsentRecord,
        source: &str,
        kind: DecisionKind,
        expires_at: i64,
    ) -> Result<ChainLink, StorageError> {
        let decided = chrono::DateTime::from_timestamp(record.at, 0).unwrap_or_default();
        let mut entry = ChainEntry {
            seq: 0,
            consent_id: record.id.as_str().to_string(),
            decided_at: record.at,
            kind,
            policy_version: record.policy,
            banner_hash: piperider_consent::chain::banner_hash(record.gpc),
            gpc: record.gpc,
            source: source.to_string(),
            expires_at,
        };
        macro_rules! append {
            ($tx:expr) => {{
                let mut tx = $tx;
                sqlx::query(
                    "INSERT INTO consent_audit (consent_id, decided_at, day, choice, policy_version, gpc, source) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(record.id.as_str())
                .bind(record.at)
                .bind(day(decided))
                .bind(record.choice.as_str())
                .bind(i64::from(record.policy))
                .bind(i64::from(record.gpc))
                .bind(source)
                .execute(&mut *tx)
                .await?;
                let head: Option<(i64, String)> =
                    sqlx::query_as("SELECT seq, hash FROM consent_records ORDER BY seq DESC LIMIT 1")
                        .fetch_optional(&mut *tx)
                        .await?;
                let (seq, prev) = match head {
                    Some((seq, hash)) => (seq.max(0) as u64, hash),
                    None => {
                        let kept: Option<String> =
                            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                                .bind(ANCHOR)
                                .fetch_optional(&mut *tx)
                                .await?;
                        parse_anchor(kept)
                    }
                };
                entry.seq = seq + 1;
                let hash = entry.link(&prev);
                sqlx::query(&format!(
                    "INSERT INTO consent_records ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ))
                .bind(entry.seq as i64)
                .bind(&entry.consent_id)
                .bind(entry.decided_at)
                .bind(entry.kind.as_str())
                .bind(i64::from(entry.policy_version))
                .bind(&entry.banner_hash)
                .bind(i64::from(entry.gpc))
                .bind(&entry.source)
                .bind(entry.expires_at)
                .bind(&prev)
                .bind(&hash)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(ChainLink {
                    entry,
                    prev_hash: prev,
                    hash,
                })
            }};
        }
        locked!(self, append)
    }

    /// Up to [`PAGE`] records after `after` (a sequence number), and the anchor.
    pub(crate) async fn consent_records(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<ChainPage, StorageError> {
        self.read(move || chain_page(self.reader(), after, limit))
            .await
    }

    /// The chain records of one decision (its id is in the visitor's cookie).
    pub(crate) async fn consent_receipt(
        &self,
        consent_id: &str,
    ) -> Result<Vec<ChainLink>, StorageError> {
        on_pool!(&self.0.backend, pool => {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM consent_records WHERE consent_id = $1 ORDER BY seq"
            ))
            .bind(consent_id)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(link_of).collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Prunes the chain's records from its start while each expired before
    /// `expired_before` (seconds), keeping the hash of the last one pruned
    /// as the anchor; returns how many went.
    pub(crate) async fn prune_consent_records(
        &self,
        expired_before: i64,
    ) -> Result<u64, StorageError> {
        macro_rules! prune {
            ($tx:expr) => {{
                let mut tx = $tx;
                // The first record still kept: every one before it goes.
                let keep_from: Option<i64> = sqlx::query_scalar(
                    "SELECT MIN(seq) FROM consent_records WHERE expires_at >= $1",
                )
                .bind(expired_before)
                .fetch_one(&mut *tx)
                .await?;
                let last: Option<(i64, String)> = match keep_from {
                    Some(first) => sqlx::query_as(
                        "SELECT seq, hash FROM consent_records WHERE seq < $1 ORDER BY seq DESC LIMIT 1",
                    )
                    .bind(first)
                    .fetch_optional(&mut *tx)
                    .await?,
                    None => sqlx::query_as("SELECT seq, hash FROM consent_records ORDER BY seq DESC LIMIT 1")
                        .fetch_optional(&mut *tx)
                        .await?,
                };
                let Some((seq, hash)) = last else {
                    return Ok(0);
                };
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(ANCHOR)
                .bind(format!("{seq}:{hash}"))
                .execute(&mut *tx)
                .await?;
                let gone = sqlx::query("DELETE FROM consent_records WHERE seq <= $1")
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(gone)
            }};
        }
        locked!(self, prune)
    }
}
