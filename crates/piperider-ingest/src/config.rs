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
    #[error("the admin token is too short: use at least 16 characters")]
    ShortToken,
    #[error("{0} must be at least 1")]
    AtLeastOne(&'static str),
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
    /// Raw events older than this many days are deleted (the rollups stay).
    #[arg(long, env = "PIPERIDER_INGEST_RETENTION_DAYS", default_value_t = 365)]
    pub retention_days: u32,
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
        if let Some(token) = &self.admin_token
            && token.len() < 16
        {
            return Err(ConfigError::ShortToken);
        }
        if self.retention_days == 0 {
            return Err(ConfigError::AtLeastOne("--retention-days"));
        }
        if self.request_timeout_secs == 0 {
            return Err(ConfigError::AtLeastOne("--request-timeout-secs"));
        }
        Ok(self)
    }

    /// A configuration for tests and embedding: defaults, this database.
    pub fn for_database(database_url: &str) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.to_string(),
            geoip_db: None,
            trusted_proxies: Vec::new(),
            admin_token: None,
            admin_token_file: None,
            retention_days: 365,
            rate_limit_ip: 0,
            rate_limit_user: 0,
            request_timeout_secs: 10,
            consent_policy_version: 1,
            cookie_secure: false,
        }
    }
}
