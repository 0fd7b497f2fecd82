//! `piperider`: profile data sources, check assertions, report, and manage
//! the CLI's own telemetry.
//!
//! Every data command records exactly one telemetry event when it finishes,
//! through the collector, with its real outcome, duration and figures. The
//! telemetry commands themselves record nothing.

// The doc comments of the commands are their `--help` text, where a path
// such as `outputs/<time>/run.json` is written as the user types it.
#![allow(rustdoc::invalid_html_tags)]

mod app;
mod assertions;
mod datasource;
mod init;
mod out;
mod profiler;
mod project;
mod recommend;
mod report;
mod run;
mod telemetry_cmd;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::{CommandFactory, Parser, Subcommand};
use piperider_collector::{Collector, CommandRecord};
use piperider_event::{CommandName, Stats, Status};

#[derive(Debug, Parser)]
#[command(
    name = "piperider",
    version,
    about = "Profile data sources, check assertions, and report on them."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a project here: .piperider/config.yml, an assertions folder and a telemetry id.
    Init(init::InitArgs),
    /// Profile every table, check the assertions, write .piperider/outputs/<time>/run.json.
    Run(run::RunArgs),
    /// Recommend assertions from the latest run (.piperider/assertions/recommended_<table>.yml).
    GenerateAssertions,
    /// Write a self-contained HTML report of the latest run and print its path.
    GenerateReport,
    /// See, change or delete what the CLI's telemetry collects.
    #[command(subcommand)]
    Telemetry(telemetry_cmd::TelemetryCmd),
    /// PipeRider's own spellings of the tracking switches.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Same as `piperider telemetry enable`.
    EnableUserTracking,
    /// Same as `piperider telemetry disable`.
    DisableUserTracking,
}

/// How a data command ended, for the exit code and the telemetry event.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) exit: u8,
    pub(crate) status: Status,
    pub(crate) stats: Option<Stats>,
    pub(crate) datasource_type: Option<String>,
}

/// A data command's failure, with the data source type when it was known.
#[derive(Debug)]
pub(crate) struct CommandError {
    pub(crate) error: anyhow::Error,
    pub(crate) datasource_type: Option<String>,
}

impl From<anyhow::Error> for CommandError {
    fn from(error: anyhow::Error) -> Self {
        CommandError {
            error,
            datasource_type: None,
        }
    }
}

impl Finished {
    pub(crate) fn ok(stats: Option<Stats>, datasource_type: Option<String>) -> Self {
        Finished {
            exit: 0,
            status: Status::Ok,
            stats,
            datasource_type,
        }
    }
}

fn main() -> ExitCode {
    let app = app::info();
    if let Some(code) = piperider_collector::run_sender_if_requested(&app) {
        return code;
    }
    let cli = Cli::parse();
    match cli.command {
        Cmd::Init(args) => host(&app, CommandName::INIT, || Ok(init::run(&args)?)),
        Cmd::Run(args) => host(&app, CommandName::RUN, || run::run(&args)),
        Cmd::GenerateAssertions => host(&app, CommandName::GENERATE_ASSERTIONS, recommend::run),
        Cmd::GenerateReport => host(&app, CommandName::GENERATE_REPORT, report::run),
        Cmd::Telemetry(cmd) => telemetry_cmd::run(&app, cmd),
        Cmd::Config(ConfigCmd::EnableUserTracking) => {
            telemetry_cmd::run(&app, telemetry_cmd::TelemetryCmd::Enable)
        }
        Cmd::Config(ConfigCmd::DisableUserTracking) => {
            telemetry_cmd::run(&app, telemetry_cmd::TelemetryCmd::Disable)
        }
        Cmd::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "piperider", &mut buf);
            out::print(&String::from_utf8_lossy(&buf));
            ExitCode::SUCCESS
        }
    }
}

/// Runs a data command, reports its error if any (exit code 2), then
/// records its one telemetry event. Telemetry cannot change the exit code.
fn host(
    app: &piperider_collector::AppInfo,
    command: CommandName,
    work: impl FnOnce() -> Result<Finished, CommandError>,
) -> ExitCode {
    let started = Instant::now();
    let collector = Arc::new(Collector::new(app.clone()));
    collector.start();
    // One event per command: whichever of the end and Ctrl-C comes first records it.
    let recorded = Arc::new(AtomicBool::new(false));
    {
        let (collector, recorded, command) = (collector.clone(), recorded.clone(), command.clone());
        let _ = ctrlc::set_handler(move || {
            if !recorded.swap(true, Ordering::SeqCst) {
                collector.record(&CommandRecord {
                    command: command.clone(),
                    status: Status::Aborted,
                    duration: started.elapsed(),
                    stats: None,
                    datasource_type: None,
                });
            }
            std::process::exit(130);
        });
    }
    let finished = match work() {
        Ok(finished) => finished,
        Err(failure) => {
            out::eprint(&format!("error: {:#}\n", failure.error));
            Finished {
                exit: 2,
                status: Status::Error,
                stats: None,
                datasource_type: failure.datasource_type,
            }
        }
    };
    if !recorded.swap(true, Ordering::SeqCst) {
        collector.record(&CommandRecord {
            command,
            status: finished.status,
            duration: started.elapsed(),
            stats: finished.stats,
            datasource_type: finished.datasource_type,
        });
    }
    ExitCode::from(finished.exit)
}
