//! `shipit`: a deploy tool that is not PipeRider, with its own name, folder
//! (`~/.shipit`, `SHIPIT_HOME`), variables (`SHIPIT_TELEMETRY_*`) and
//! command names (`shipit.deploy`), built on PipeRider's boundary crates.
//!
//! - `shipit deploy [--fail]`: the host command; records one event.
//! - `shipit telemetry status|disable|enable|pending`: the user's side.
//! - `shipit profile`: the profile as the profile crate reads it.
//! - `shipit consent`: a banner decision and its cookie, as a web app makes them.
//! - `shipit validate`: an event built by hand and checked as the backend checks it.

use std::process::ExitCode;
use std::time::Instant;

use piperider_collector::{AppInfo, Collector, CommandRecord, run_sender_if_requested};
use piperider_consent::{Choice, ConsentRecord, CookieCodec, Policy, may_track_visitor};
use piperider_event::{CliEvent, CommandName, Runtime, Stats, Status, WireEvent};
use piperider_profile::{AppHome, ProfileStore};

fn app() -> AppInfo {
    AppInfo {
        name: "shipit".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        runtime: Runtime {
            name: "rust".into(),
            version: "1.89.0".into(),
        },
        default_endpoint: None,
        notice: "shipit collects anonymous usage data; `shipit telemetry disable` turns it off."
            .into(),
    }
}

fn main() -> ExitCode {
    let app = app();
    // First thing: the detached sender is this binary, started again.
    if let Some(code) = run_sender_if_requested(&app) {
        return code;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["deploy", rest @ ..] => deploy(app, rest.contains(&"--fail")),
        ["telemetry", what] => telemetry(Collector::new(app), what),
        ["profile"] => profile(),
        ["consent"] => consent(),
        ["validate"] => validate(),
        _ => {
            eprintln!(
                "usage: shipit deploy|telemetry <status|disable|enable|pending>|profile|consent|validate"
            );
            ExitCode::from(2)
        }
    }
}

fn deploy(app: AppInfo, fail: bool) -> ExitCode {
    let started = Instant::now();
    // ... the deploy itself ...
    let status = if fail { Status::Error } else { Status::Ok };
    let recorded = Collector::new(app).record(&CommandRecord {
        command: CommandName::new("shipit.deploy").expect("a valid command name"),
        status,
        duration: started.elapsed(),
        stats: Some(Stats {
            tables: 3,
            ..Stats::default()
        }),
        datasource_type: None,
    });
    // Shown for the test; a real host ignores what telemetry did.
    eprintln!("telemetry: {recorded:?}");
    if fail {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn telemetry(collector: Collector, what: &str) -> ExitCode {
    match what {
        "status" => {
            let status = collector.status();
            println!("{}", serde_json::to_string(&status).expect("JSON"));
        }
        "disable" => match collector.disable() {
            Ok(discarded) => println!("disabled; {discarded} pending event(s) discarded"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        "enable" => {
            if let Err(e) = collector.enable() {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
            println!("enabled");
        }
        "pending" => println!("{}", collector.pending().len()),
        _ => return ExitCode::from(2),
    }
    ExitCode::SUCCESS
}

fn profile() -> ExitCode {
    let home = match AppHome::resolve("shipit") {
        Ok(home) => home,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match ProfileStore::for_home(&home).load() {
        Ok(Some(p)) => println!("{} {}", p.user_id, p.anonymous_tracking),
        Ok(None) => println!("none"),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn consent() -> ExitCode {
    let policy = Policy::new(3);
    let codec = CookieCodec::new(b"shipit's cookie secret, from its own settings");
    let now = chrono::Utc::now();
    let record = ConsentRecord::new(Choice::AcceptAll, &policy, now, false);
    let visitor = record.visitor.clone().expect("Accept All names a visitor");
    let cookie = codec.encode(&record);
    let tracked = may_track_visitor(Some(&cookie), &codec, &policy, now, &visitor);
    let declined = ConsentRecord::after(Some(&record), Choice::NecessaryOnly, &policy, now, false);
    let after = may_track_visitor(
        Some(&codec.encode(&declined)),
        &codec,
        &policy,
        now,
        &visitor,
    );
    println!("{tracked} {after}");
    ExitCode::SUCCESS
}

fn validate() -> ExitCode {
    let now = chrono::Utc::now();
    let event = serde_json::json!({
        "event_id": "0190f5a0-0000-7000-8000-000000000001",
        "event_type": "shipit.deploy",
        "timestamp": now.to_rfc3339(),
        "user_id": "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b",
        "device_id": "0123456789abcdef0123456789abcdef",
        "platform": {"os": "linux", "arch": "x86_64", "os_version": "6"},
        "runtime": {"name": "rust", "version": "1.89.0"},
        "app_version": "2.0.0",
        "initial_version": "2.0.0",
        "ci": null,
        "project": null,
        "stats": {"tables": 1, "columns": 2, "rows": 3, "builtin_assertions": 0,
                  "custom_assertions": 0, "passed_assertions": 1, "failed_assertions": 0},
        "outcome": {"status": "ok", "duration_ms": 5}
    });
    let good = CliEvent::parse(event.to_string().as_bytes(), now);
    let mut broken = event.clone();
    broken["stats"]["rows"] = (-7).into();
    let bad = CliEvent::parse(broken.to_string().as_bytes(), now);
    match (good, bad) {
        (Ok(e), Err(why)) => {
            println!("{} ok; refused: {why}", e.event_type);
            ExitCode::SUCCESS
        }
        (good, bad) => {
            eprintln!("unexpected: {good:?} {bad:?}");
            ExitCode::FAILURE
        }
    }
}
