//! A minimal host CLI: it hands over to the sender when started as one,
//! records one event per command (the first run shows the notice and
//! records nothing), sends, and prints `status`. Its backend is the
//! testkit's sink on loopback, and its home a temporary folder.
//!
//! `cargo run -p piperider-collector --example host_cli`

use std::process::ExitCode;
use std::time::Duration;

use piperider_collector::{
    AppInfo, Collector, CommandRecord, Env, Recorded, SenderPolicy, run_sender_if_requested,
};
use piperider_event::{CommandName, Runtime, Status};
use piperider_profile::AppHome;
use piperider_testkit::{Mode, Sink};

fn main() -> ExitCode {
    let app = AppInfo {
        name: "hostcli".into(),
        version: "1.0.0".into(),
        runtime: Runtime {
            name: "rust".into(),
            version: "1.95.0".into(),
        },
        default_endpoint: None,
        notice: "hostcli collects anonymous usage data; `hostcli telemetry disable` turns it off."
            .into(),
    };
    // First thing in main: the detached sender is this binary again.
    if let Some(code) = run_sender_if_requested(&app) {
        return code;
    }

    let sink = Sink::start(Mode::Accept);
    let home = tempfile::tempdir().expect("a temporary folder");
    let env = Env::from_pairs([(app.endpoint_var(), sink.endpoint())]);
    let collector = Collector::with_parts(
        app,
        AppHome::at("hostcli", home.path().join(".hostcli")),
        home.path(),
        env,
    );
    let command = |started: std::time::Instant| CommandRecord {
        command: CommandName::RUN,
        status: Status::Ok,
        duration: started.elapsed(),
        stats: None,
        datasource_type: None,
    };

    // The first run creates the profile and shows the notice: nothing recorded.
    let first = collector.record(&command(std::time::Instant::now()));
    println!("first run: {first:?}");
    assert_eq!(first, Recorded::NoticeShown);
    // The next is queued on disk; the command never waits for the network.
    let second = collector.record(&command(std::time::Instant::now()));
    println!("second run: {second:?}");

    // What the detached sender does, here in this process.
    let report = collector.run_sender(&SenderPolicy {
        request_timeout: Duration::from_secs(5),
        ..SenderPolicy::default()
    });
    println!("sent {} event(s)", report.sent);
    let status = collector.status();
    println!(
        "telemetry is {}: {} (pending {})",
        if status.enabled { "on" } else { "off" },
        status.explanation,
        status.pending_events
    );
    if sink.events().len() == 1 && status.pending_events == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("the backend has {} event(s)", sink.events().len());
        ExitCode::FAILURE
    }
}
