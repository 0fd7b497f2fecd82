//! The service's configuration: flags, with `PIPERIDER_INGEST_*`
//! environment fallbacks (`piperider-ingest --help` lists them).

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--admin-token-file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--admin-token-file {}: the file is empty", .0.display())]
    EmptyTokenFile(PathBuf),
    #[error(
        "the admin token is too weak (about {bits} bits): use at least {MIN_TOKEN_BITS} bits of randomness, \
         such as the output of `openssl rand -hex 32`"
    )]
    WeakToken { bits: u32 },
    #[error("{0} must be at least 1")]
    AtLeastOne(&'static str),
    #[error("--role writer stores the queue's events: give --queue too")]
    WriterWithoutQueue,
    #[error(
        "--read-database-url takes a PostgreSQL replica (postgres://...) of a PostgreSQL --database-url"
    )]
    ReplicaNeedsPostgres,
    #[error("--bulk-load holds the SQLite writer's rollups: it takes an sqlite: --database-url")]
    BulkLoadNeedsSqlite,
}

/// The least an admin token may hold, in bits.
pub const MIN_TOKEN_BITS: u32 = 128;

/// An upper estimate of a token's randomness: its length times the bits of
/// one character drawn from the classes it uses (lowercase, uppercase,
/// digits, other printable ASCII, anything else), and none for a token of
/// fewer than 8 different characters (`aaaa...`, `abab...`). A token that
/// fails it is weak for sure; one that passes is only as good as how it
/// was made.
pub fn token_bits(token: &str) -> u32 {
    let distinct: std::collections::BTreeSet<char> = token.chars().collect();
    if distinct.len() < 8 {
        return 0;
    }
    let has = |f: fn(&char) -> bool| token.chars().any(|c| f(&c));
    let pool: u32 = [
        (has(char::is_ascii_lowercase), 26),
        (has(char::is_ascii_uppercase), 26),
        (has(char::is_ascii_digit), 10),
        (has(char::is_ascii_punctuation), 32),
        (has(|c| !c.is_ascii()), 1000),
    ]
    .into_iter()
    .filter_map(|(present, size)| present.then_some(size))
    .sum();
    let per_char = f64::from(pool.max(1)).log2();
    (token.chars().count() as f64 * per_char) as u32
}

/// Configuration: flags, with `PIPERIDER_INGEST_*` environment fallbacks.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(
        long,
        env = "PIPERIDER_INGEST_LISTEN",
        default_value = "127.0.0.1:8700"
    )]
    pub listen: SocketAddr,
    /// `sqlite:path.db` (created if missing) or `postgres://user@host:5432/db`.
    #[arg(
        long,
        env = "PIPERIDER_INGEST_DATABASE_URL",
        default_value = "sqlite:piperider-ingest.db"
    )]
    pub database_url: String,
    /// A streaming replica of the PostgreSQL database (`postgres://...`)
    /// for the dashboard's reads (figures, charts, the public page, Cloud
    /// figures, the consent records' export); they may lag the primary by
    /// the replication delay. When a read fails there, the primary answers
    /// it and takes the reads for 30 s.
    #[arg(long, env = "PIPERIDER_INGEST_READ_DATABASE_URL")]
    pub read_database_url: Option<String>,
    /// A MaxMind-format City database (.mmdb) for country and region.
    #[arg(long, env = "PIPERIDER_INGEST_GEOIP_DB")]
    pub geoip_db: Option<PathBuf>,
    /// A proxy (CIDR) whose X-Forwarded-For is believed. Repeatable.
    #[arg(
        long = "trusted-proxy",
        env = "PIPERIDER_INGEST_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// The admin API's bearer token. Without one, the admin API answers 401.
    #[arg(long, env = "PIPERIDER_INGEST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token (its first line).
    #[arg(
        long,
        env = "PIPERIDER_INGEST_ADMIN_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<PathBuf>,
    /// Raw events and Cloud events older than this many days are deleted
    /// (the CLI rollups stay).
    #[arg(long, env = "PIPERIDER_INGEST_RETENTION_DAYS", default_value_t = 365)]
    pub retention_days: u32,
    /// Consent decisions (the audit trail that shows a visitor's choice)
    /// older than this many days are deleted.
    #[arg(
        long,
        env = "PIPERIDER_INGEST_CONSENT_RETENTION_DAYS",
        default_value_t = 730
    )]
    pub consent_retention_days: u32,
    /// Refused events kept for inspection (their reason and keys, never a
    /// value) older than this many days are deleted.
    #[arg(
        long,
        env = "PIPERIDER_INGEST_QUARANTINE_RETENTION_DAYS",
        default_value_t = 30
    )]
    pub quarantine_retention_days: u32,
    /// Requests per second from one client address (0: no limit).
    #[arg(long, env = "PIPERIDER_INGEST_RATE_LIMIT_IP", default_value_t = 50)]
    pub rate_limit_ip: u32,
    /// Requests per second carrying one user's events (0: no limit).
    #[arg(long, env = "PIPERIDER_INGEST_RATE_LIMIT_USER", default_value_t = 10)]
    pub rate_limit_user: u32,
    /// Longest time one request may take.
    #[arg(
        long,
        env = "PIPERIDER_INGEST_REQUEST_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub request_timeout_secs: u64,
    /// The Cloud consent policy's version; raising it asks every visitor again.
    #[arg(
        long,
        env = "PIPERIDER_INGEST_CONSENT_POLICY_VERSION",
        default_value_t = 1
    )]
    pub consent_policy_version: u32,
    /// Mark the consent cookie `Secure` (serve over https).
    #[arg(long, env = "PIPERIDER_INGEST_COOKIE_SECURE")]
    pub cookie_secure: bool,
    /// Serve the public summary (`GET /v1/public/summary`, `GET /public`):
    /// distinct users per platform, version, data source, country, region
    /// and command, every group under its floor folded into "other".
    #[arg(long, env = "PIPERIDER_INGEST_PUBLIC_STATS")]
    pub public_stats: bool,
    /// Fill a new SQLite database with history (an import, a replay, a
    /// benchmark's data set): the writer holds rollups and the dashboard's
    /// cube back for up to a minute and two million events, instead of
    /// five seconds, so a user, day or segment is written far fewer
    /// times. Reads and deletions still write them first. Memory grows by
    /// gigabytes; not for a service taking live traffic. SQLite only.
    #[arg(long, env = "PIPERIDER_INGEST_BULK_LOAD")]
    pub bulk_load: bool,
    /// Queue mode: the NATS JetStream servers (`nats://host:port`,
    /// comma-separated). A node publishes valid events to the stream and
    /// answers once it holds them; writers (`--role writer`) store them
    /// into the PostgreSQL database.
    #[arg(long, env = "PIPERIDER_INGEST_QUEUE", value_delimiter = ',')]
    pub queue: Vec<String>,
    /// What this process does in queue mode: `node` takes requests and
    /// publishes events, `writer` stores the stream's events (and serves
    /// the API on the database, for operators).
    #[arg(long, env = "PIPERIDER_INGEST_ROLE", value_enum, default_value_t = Role::Node)]
    pub role: Role,
    /// Copies of the stream (default: 3 when the queue has three servers
    /// or more, else 1).
    #[arg(long, env = "PIPERIDER_INGEST_QUEUE_REPLICAS")]
    pub queue_replicas: Option<usize>,
    /// Most bytes the stream holds (events no writer has stored yet);
    /// when it is full, nodes answer 503 and clients keep their events.
    #[arg(
        long,
        env = "PIPERIDER_INGEST_QUEUE_MAX_BYTES",
        default_value_t = 4 << 30
    )]
    pub queue_max_bytes: i64,
    /// Oldest an event may become in the stream before it is dropped
    /// unstored (writers away that long), in hours.
    #[arg(
        long,
        env = "PIPERIDER_INGEST_QUEUE_MAX_AGE_HOURS",
        default_value_t = 168
    )]
    pub queue_max_age_hours: u64,
}

/// What a process does in queue mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Takes requests; publishes events and deletions to the stream.
    Node,
    /// Stores the stream's events into PostgreSQL.
    Writer,
}

impl Config {
    /// Checks what the flags alone cannot, and reads the token file.
    pub fn resolve(mut self) -> Result<Config, ConfigError> {
        if let Some(path) = &self.admin_token_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
                path: path.clone(),
                source,
            })?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.is_empty() {
                return Err(ConfigError::EmptyTokenFile(path.clone()));
            }
            self.admin_token = Some(token);
        }
        if let Some(token) = &self.admin_token {
            let bits = token_bits(token);
            if bits < MIN_TOKEN_BITS {
                return Err(ConfigError::WeakToken { bits });
            }
        }
        if self.retention_days == 0 {
            return Err(ConfigError::AtLeastOne("--retention-days"));
        }
        if self.consent_retention_days == 0 {
            return Err(ConfigError::AtLeastOne("--consent-retention-days"));
        }
        if self.quarantine_retention_days == 0 {
            return Err(ConfigError::AtLeastOne("--quarantine-retention-days"));
        }
        if self.request_timeout_secs == 0 {
            return Err(ConfigError::AtLeastOne("--request-timeout-secs"));
        }
        if !self.queue.is_empty() {
            if self.queue_replicas == Some(0) {
                return Err(ConfigError::AtLeastOne("--queue-replicas"));
            }
            if self.queue_max_bytes < 1 {
                return Err(ConfigError::AtLeastOne("--queue-max-bytes"));
            }
            if self.queue_max_age_hours == 0 {
                return Err(ConfigError::AtLeastOne("--queue-max-age-hours"));
            }
        } else if self.role == Role::Writer {
            return Err(ConfigError::WriterWithoutQueue);
        }
        if self.bulk_load && !self.database_url.starts_with("sqlite:") {
            return Err(ConfigError::BulkLoadNeedsSqlite);
        }
        if let Some(url) = &self.read_database_url {
            use crate::storage::is_postgres_url;
            if !is_postgres_url(url) || !is_postgres_url(&self.database_url) {
                return Err(ConfigError::ReplicaNeedsPostgres);
            }
        }
        Ok(self)
    }

    /// How the SQLite writer holds rollups back: for a fill with history
    /// under `--bulk-load`, as a live service otherwise.
    pub fn rollup_hold(&self) -> crate::RollupHold {
        if self.bulk_load {
            crate::RollupHold::BULK_LOAD
        } else {
            crate::RollupHold::SERVING
        }
    }

    /// The queue's settings, in queue mode.
    pub fn queue_config(&self) -> Option<crate::storage::QueueConfig> {
        (!self.queue.is_empty()).then(|| crate::storage::QueueConfig {
            urls: self.queue.clone(),
            replicas: self.queue_replicas,
            max_bytes: self.queue_max_bytes,
            max_age: std::time::Duration::from_secs(self.queue_max_age_hours.saturating_mul(3600)),
        })
    }

    /// A configuration for tests and embedding: defaults, this database.
    pub fn for_database(database_url: &str) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.to_string(),
            read_database_url: None,
            geoip_db: None,
            trusted_proxies: Vec::new(),
            admin_token: None,
            admin_token_file: None,
            retention_days: 365,
            consent_retention_days: 730,
            quarantine_retention_days: 30,
            rate_limit_ip: 0,
            rate_limit_user: 0,
            request_timeout_secs: 10,
            consent_policy_version: 1,
            cookie_secure: false,
            public_stats: false,
            bulk_load: false,
            queue: Vec::new(),
            role: Role::Node,
            queue_replicas: None,
            queue_max_bytes: 4 << 30,
            queue_max_age_hours: 168,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_admin_tokens_are_refused_at_start() {
        for weak in [
            "aaaaaaaaaaaaaaaa",
            "abababababababababababababababab",
            "0123456789abcdef",
            "password12345678",
        ] {
            let mut config = Config::for_database("sqlite::memory:");
            config.admin_token = Some(weak.into());
            match config.resolve() {
                Err(ConfigError::WeakToken { bits }) => assert!(bits < MIN_TOKEN_BITS, "{weak}"),
                other => panic!("{weak} was taken: {other:?}"),
            }
        }
        // `openssl rand -hex 16` and `-hex 32`, and a long passphrase-like token.
        for strong in [
            "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b",
            "9b2e4c7a1d3f5e8b0a6c2d4f7e9b1a3c5d7f9e2b4a6c8d0e1f3a5b7c9d2e4f6a",
            "test-admin-token-0123456789",
        ] {
            let mut config = Config::for_database("sqlite::memory:");
            config.admin_token = Some(strong.into());
            assert!(config.resolve().is_ok(), "{strong} was refused");
        }
    }

    #[test]
    fn a_bulk_load_takes_only_an_sqlite_database() {
        let mut config = Config::for_database("postgres://postgres@127.0.0.1:5432/test");
        config.bulk_load = true;
        assert!(matches!(
            config.resolve(),
            Err(ConfigError::BulkLoadNeedsSqlite)
        ));
        let mut config = Config::for_database("sqlite:telemetry.db");
        config.bulk_load = true;
        assert!(config.resolve().is_ok());
    }
}
