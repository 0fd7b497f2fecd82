//! Running the service: [`serve`] on a listener until a shutdown signal,
//! and [`run`], the part of `main` both binaries share (logs, runtime,
//! listener, exit code).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::{AppState, Config, Geo, GeoError, StorageError, Store, app};

/// Why the service did not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened or migrated (the URL without its password).
    #[error("database {url}: {source}")]
    Database { url: String, source: StorageError },
    /// The GeoIP database could not be read.
    #[error(transparent)]
    Geo(#[from] GeoError),
    /// The service's settings could not be read or made.
    #[error("starting the service: {0}")]
    State(StorageError),
    /// The listening address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// Hourly: the retention pass ([`AppState::run_retention`]), and idle
/// rate-limit buckets and failed-login windows trimmed.
fn start_maintenance(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            if let Err(e) = state.run_retention(chrono::Utc::now()).await {
                tracing::warn!(error = %e, "retention run failed");
            }
            state.limits.shrink();
            state.admin_failures.shrink();
        }
    })
}

impl AppState {
    /// One retention pass as of `now`: on PostgreSQL the partitions of
    /// `events` prepared ahead; the rollups brought up to date; then raw CLI
    /// events and Cloud events past `--retention-days` deleted, consent
    /// decisions past `--consent-retention-days`.
    pub async fn run_retention(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StorageError> {
        let before = |days: u32| now - chrono::TimeDelta::days(i64::from(days));
        self.store.prepare_partitions(now).await?;
        // Rollups first: an event that arrived already past retention is
        // still counted before its raw row goes.
        self.store.flush().await?;
        let events = before(self.config.retention_days);
        let deleted = self.store.prune_events(events.timestamp_millis()).await?;
        let day = |t: chrono::DateTime<chrono::Utc>| t.date_naive().to_string();
        let consent = before(self.config.consent_retention_days);
        let (cloud, decisions) = self.store.prune_cloud(&day(events), &day(consent)).await?;
        // Consent records are kept twelve months after their decision expired.
        let records = self
            .store
            .prune_consent_records((now - chrono::TimeDelta::days(365)).timestamp())
            .await?;
        let refused = before(self.config.quarantine_retention_days);
        let quarantined = self
            .store
            .prune_quarantine(refused.timestamp_millis())
            .await?;
        if deleted + cloud + decisions + quarantined + records > 0 {
            tracing::info!(
                events = deleted,
                cloud_events = cloud,
                consent_decisions = decisions,
                consent_records = records,
                quarantined,
                "retention: deleted"
            );
        }
        Ok(())
    }
}

/// Runs the service on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish and their commits complete.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_router(config, listener, shutdown, |router| router).await
}

/// [`serve`], with `extend` adding to the router first (the dev stack adds
/// its demo site this way).
pub async fn serve_router(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    extend: impl FnOnce(axum::Router) -> axum::Router,
) -> Result<(), ServeError> {
    let queue = config.queue_config();
    let connected = match (&queue, config.role) {
        (Some(queue), crate::config::Role::Node) => {
            Store::connect_node(&config.database_url, queue).await
        }
        _ => Store::connect_with(&config.database_url, config.rollup_hold()).await,
    };
    let store = connected.map_err(|source| ServeError::Database {
        url: redact(&config.database_url),
        source,
    })?;
    // A writer stores the stream's events until the service stops.
    let (stop_writers, writers_stopped) = tokio::sync::oneshot::channel::<()>();
    let writers = match (&queue, config.role) {
        (Some(queue), crate::config::Role::Writer) => {
            let (store, queue) = (store.clone(), queue.clone());
            Some(tokio::spawn(async move {
                crate::storage::run_writers(store, &queue, async {
                    let _ = writers_stopped.await;
                })
                .await
            }))
        }
        _ => None,
    };
    let geo = match &config.geoip_db {
        Some(path) => Geo::open(path)?,
        None => Geo::default(),
    };
    let state = AppState::new(config, store.clone(), geo)
        .await
        .map_err(ServeError::State)?;
    let maintenance = start_maintenance(&state);
    let router = extend(app(state));
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    maintenance.abort();
    let _ = stop_writers.send(());
    if let Some(writers) = writers
        && let Ok(Err(e)) = writers.await
    {
        tracing::warn!(error = %e, "the queue's writers stopped with an error");
    }
    // In-flight requests are done: the writers drain their queues and stop.
    store.close().await;
    Ok(())
}

/// A database URL without its passwords, for messages: the one after the
/// user name and any `password` or `sslpassword` query parameter.
pub fn redact(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => match base[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &base[..s + 3], &base[at..]),
            None => base.to_string(),
        },
        _ => base.to_string(),
    };
    if query.is_empty() {
        return base;
    }
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _))
                if key.eq_ignore_ascii_case("password")
                    || key.eq_ignore_ascii_case("sslpassword") =>
            {
                format!("{key}=***")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests and commits");
}

/// Every flag of a backend binary: the configuration and the log format.
#[derive(Debug, clap::Args)]
pub struct Flags {
    #[command(flatten)]
    pub config: Config,
    /// Log as JSON lines (default: human-readable).
    #[arg(long, env = "PIPERIDER_INGEST_LOG_JSON")]
    pub log_json: bool,
}

/// A binary's `main` once its flags are parsed: structured logs
/// (`PIPERIDER_INGEST_LOG`, JSON lines with `log_json`), the settings
/// checked (exit 2 with the reason), then the service with `extend` added
/// to its router until SIGINT or SIGTERM.
pub fn run(
    name: &str,
    flags: Flags,
    extend: impl FnOnce(axum::Router) -> axum::Router,
) -> ExitCode {
    let Flags { config, log_json } = flags;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PIPERIDER_INGEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let config = match config.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let addr = config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen { addr, source })?;
        tracing::info!(listen = %addr, database = %redact(&config.database_url), "{name} started");
        serve_router(config, listener, shutdown_signal(), extend).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(2)
        }
    }
}

/// `piperider-ingest export` and `import`: moving every table between
/// databases (see [`crate::storage::transfer`]); `verify-consent` and
/// `partitions`, other work on a database.
#[derive(Debug, clap::Subcommand)]
pub enum Transfer {
    /// Write every table (raw events, users, projects, rollups, owner keys,
    /// deletion tombstones, Cloud events, consent decisions) as
    /// newline-delimited JSON, from one snapshot; the service may keep running.
    Export {
        /// The database to read.
        #[arg(long, env = "PIPERIDER_INGEST_DATABASE_URL")]
        database_url: String,
        /// The file to write (`-`: standard output).
        #[arg(long, short, default_value = "-")]
        output: std::path::PathBuf,
        /// Compress with gzip.
        #[arg(long)]
        gzip: bool,
    },
    /// Check the consent records' chain from its anchor; name the first
    /// record that does not hold (exit 1).
    VerifyConsent {
        /// The database to read.
        #[arg(long, env = "PIPERIDER_INGEST_DATABASE_URL")]
        database_url: String,
    },
    /// Make the partitions of PostgreSQL's raw events for every month from
    /// `--from` to `--to` (days, YYYY-MM-DD) before loading past events in
    /// bulk (`COPY`), so they go straight to their months' partitions; the
    /// service makes this month's and next month's by itself.
    Partitions {
        /// The PostgreSQL database (migrated first if need be).
        #[arg(long, env = "PIPERIDER_INGEST_DATABASE_URL")]
        database_url: String,
        /// The first month's day.
        #[arg(long)]
        from: chrono::NaiveDate,
        /// The last month's day.
        #[arg(long)]
        to: chrono::NaiveDate,
    },
    /// Read an export (gzip or not) into a database of either kind:
    /// idempotent, and refused by a database that holds other data. Stop
    /// the service on that database first.
    Import {
        /// The database to write.
        #[arg(long, env = "PIPERIDER_INGEST_DATABASE_URL")]
        database_url: String,
        /// The file to read (`-`: standard input).
        #[arg(long, short, default_value = "-")]
        input: std::path::PathBuf,
    },
}

/// Runs an export or import; exit 1 with the reason when it fails.
pub fn run_transfer(name: &str, command: Transfer) -> ExitCode {
    use std::io::{BufRead, Write};
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<String, String> = runtime.block_on(async {
        match command {
            Transfer::Export {
                database_url,
                output,
                gzip,
            } => {
                let file: Box<dyn Write> = if output.as_os_str() == "-" {
                    Box::new(std::io::stdout().lock())
                } else {
                    Box::new(
                        std::fs::File::create(&output)
                            .map_err(|e| format!("{}: {e}", output.display()))?,
                    )
                };
                let failed = |e: std::io::Error| format!("{}: {e}", output.display());
                let export = async |out: &mut dyn Write| {
                    crate::storage::transfer::export(&database_url, out)
                        .await
                        .map_err(|e| format!("export from {}: {e}", redact(&database_url)))
                };
                let report = if gzip {
                    let mut out = std::io::BufWriter::new(flate2::write::GzEncoder::new(
                        file,
                        flate2::Compression::default(),
                    ));
                    let report = export(&mut out).await?;
                    // The gzip trailer written, and any error in writing it seen.
                    out.into_inner()
                        .map_err(|e| failed(e.into_error()))?
                        .finish()
                        .and_then(|mut file| file.flush())
                        .map_err(failed)?;
                    report
                } else {
                    let mut out = std::io::BufWriter::new(file);
                    let report = export(&mut out).await?;
                    out.flush().map_err(failed)?;
                    report
                };
                Ok(format!("exported {} rows", report.rows))
            }
            Transfer::Partitions {
                database_url,
                from,
                to,
            } => {
                if !crate::storage::is_postgres_url(&database_url) {
                    return Err("partitions: the raw events are partitioned on PostgreSQL only".into());
                }
                let made = crate::storage::prepare_event_months(&database_url, from, to)
                    .await
                    .map_err(|e| format!("{}: {e}", redact(&database_url)))?;
                Ok(if made.is_empty() {
                    "every month had its partition already".into()
                } else {
                    format!("made {} partitions: {}", made.len(), made.join(", "))
                })
            }
            Transfer::VerifyConsent { database_url } => {
                crate::storage::consent_chain::verify_chain(&database_url)
                    .await
                    .map_err(|e| format!("{}: {e}", redact(&database_url)))
            }
            Transfer::Import {
                database_url,
                input,
            } => {
                let file: Box<dyn std::io::Read> = if input.as_os_str() == "-" {
                    Box::new(std::io::stdin().lock())
                } else {
                    Box::new(
                        std::fs::File::open(&input)
                            .map_err(|e| format!("{}: {e}", input.display()))?,
                    )
                };
                let mut reader = std::io::BufReader::new(file);
                // gzip by its magic number.
                let gzipped = reader
                    .fill_buf()
                    .map_err(|e| e.to_string())?
                    .starts_with(&[0x1f, 0x8b]);
                let mut source: Box<dyn BufRead> = if gzipped {
                    Box::new(std::io::BufReader::new(
                        flate2::bufread::MultiGzDecoder::new(reader),
                    ))
                } else {
                    Box::new(reader)
                };
                let report = crate::storage::transfer::import(&database_url, &mut source)
                    .await
                    .map_err(|e| format!("import into {}: {e}", redact(&database_url)))?;
                let mut done = format!("read {} rows, inserted {}", report.rows, report.inserted);
                if report.outside_cube > 0 {
                    done.push_str(&format!(
                        "; {} events were not yet in the source's dashboard rollups and count in every figure but the dashboard's charts (export from a stopped service to avoid this)",
                        report.outside_cube
                    ));
                }
                Ok(done)
            }
        }
    });
    match result {
        Ok(done) => {
            eprintln!("{name}: {done}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_a_message() {
        for (url, shown) in [
            ("postgres://u:secret@db/x", "postgres://u:***@db/x"),
            (
                "postgres://u@db/x?password=secret&sslmode=require",
                "postgres://u@db/x?password=***&sslmode=require",
            ),
            (
                "postgres://db/x?sslmode=require&PASSWORD=secret",
                "postgres://db/x?sslmode=require&PASSWORD=***",
            ),
            (
                "postgres://u:a@b@db/x?sslpassword=secret",
                "postgres://u:***@db/x?sslpassword=***",
            ),
            ("sqlite:/tmp/x.db?mode=rwc", "sqlite:/tmp/x.db?mode=rwc"),
        ] {
            assert_eq!(redact(url), shown);
            assert!(!redact(url).contains("secret"));
        }
    }
}
