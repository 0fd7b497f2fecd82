//! What can go wrong in the storage layer. Handlers turn any of these into
//! a 503 (`ApiError: From<StorageError>`); the text is logged, never sent.

use std::path::PathBuf;

/// A storage failure. Nothing of the request that met it was stored.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database URL names no supported database.
    #[error("unsupported database URL (use sqlite:path.db or postgres://...)")]
    UnsupportedUrl,
    /// An SQLite store given as an in-memory database: the writer thread
    /// opens the file again, so it must be one.
    #[error(
        "the SQLite store must be a file (sqlite:path/to/telemetry.db), not an in-memory database"
    )]
    InMemorySqlite,
    /// Another process holds the SQLite file's writer lock.
    #[error(
        "another process is writing to {0}: an SQLite store takes one piperider-ingest at a time (run several on PostgreSQL)"
    )]
    SqliteBusy(PathBuf),
    /// A file next to the store (the writer lock) could not be opened.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The WAL could not be synced after a commit.
    #[error("syncing {path}: {message}")]
    Sync { path: PathBuf, message: String },
    /// A statement failed (sqlx: reads, PostgreSQL writes, migrations).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A statement of the SQLite writer failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// A writer thread could not be started.
    #[error("starting a writer thread: {0}")]
    Thread(std::io::Error),
    /// The writer has stopped (the store is closing or was closed).
    #[error("the writer has stopped")]
    WriterStopped,
    /// A stored rollup value that cannot be read (the named column).
    #[error("stored {0} is malformed")]
    Corrupt(&'static str),
    /// The queue (NATS JetStream) failed or refused a message.
    #[error("queue: {0}")]
    Queue(String),
    /// Queue mode stores into PostgreSQL only.
    #[error("queue mode needs a PostgreSQL database (--database-url postgres://...)")]
    QueueNeedsPostgres,
    /// A read replica needs a PostgreSQL primary and a PostgreSQL URL.
    #[error(
        "--read-database-url takes a PostgreSQL replica (postgres://...) of a PostgreSQL --database-url"
    )]
    ReplicaNeedsPostgres,
    /// A failure shared by every request of one group commit.
    #[error("group commit failed: {0}")]
    Group(std::sync::Arc<StorageError>),
}

impl StorageError {
    /// Whether the database refused the data written (a value out of
    /// range, a character it cannot store, a constraint or trigger), as
    /// opposed to failing itself: a request with such data fails alone,
    /// with 400, and storage stays ready.
    pub fn is_data(&self) -> bool {
        match self {
            // SQLSTATE classes 22 (data exception) and 23 (integrity constraint).
            StorageError::Database(sqlx::Error::Database(e)) => e
                .code()
                .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
            StorageError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TooBig
                    | rusqlite::ErrorCode::TypeMismatch
            ),
            StorageError::Group(inner) => inner.is_data(),
            _ => false,
        }
    }

    /// This error for one of several requests that shared it.
    pub(crate) fn shared(self: &std::sync::Arc<Self>) -> StorageError {
        StorageError::Group(self.clone())
    }
}
