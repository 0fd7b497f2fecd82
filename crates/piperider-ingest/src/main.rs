//! The `piperider-ingest` binary: flags and environment into a
//! configuration, structured logs, then [`piperider_ingest::serve`].

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "piperider-ingest",
    version,
    about = "PipeRider telemetry backend."
)]
struct Cli {
    #[command(flatten)]
    config: piperider_ingest::Config,
    /// Log as JSON lines (default: human-readable).
    #[arg(long, env = "PIPERIDER_INGEST_LOG_JSON")]
    log_json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("PIPERIDER_INGEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if cli.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let config = match cli.config.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("piperider-ingest: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("piperider-ingest: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        tracing::info!(listen = %config.listen, database = %piperider_ingest::redact(&config.database_url), "piperider-ingest started");
        piperider_ingest::serve(config, listener, piperider_ingest::shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("piperider-ingest: {e:#}");
            ExitCode::from(2)
        }
    }
}
