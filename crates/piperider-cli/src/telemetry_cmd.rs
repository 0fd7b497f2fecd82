//! `piperider telemetry ...`: see, switch and delete. None of these records an event.

use std::process::ExitCode;

use clap::Subcommand;
use piperider_collector::{AppInfo, Collector};

use crate::out;

#[derive(Debug, Clone, Subcommand)]
pub(crate) enum TelemetryCmd {
    /// Whether telemetry is on, the rule that decided, and what is waiting to be sent.
    Status {
        /// One JSON object: enabled, reason, user_id, project_id, pending_events, endpoint, ...
        #[arg(long)]
        json: bool,
    },
    /// Turn telemetry on (anonymous_tracking: true in the profile). Nothing
    /// recorded before this moment is ever sent.
    Enable,
    /// Keep events on this machine only: each command's event is recorded
    /// (see `telemetry show`) and never sent. Pending events are deleted.
    Local,
    /// Turn all telemetry off and delete pending events. Sends nothing, not even the opt-out.
    Disable,
    /// Print the pending events, exactly as they will be sent, then the
    /// events kept in local mode: one JSON object per line.
    Show,
    /// The batches that left this machine (the last 2,500 events, 1 MiB,
    /// four weeks), each with whether the backend's receipt matches what
    /// was sent and whether the backend still holds it as sent (asked with
    /// your profile's proof). Exits 1 when either check fails.
    Sent {
        /// Every batch as one JSON array, bodies included.
        #[arg(long)]
        json: bool,
        /// Check the receipts only; do not ask the backend.
        #[arg(long)]
        offline: bool,
        /// Print each batch's bytes under its line.
        #[arg(long)]
        bodies: bool,
    },
    /// Delete every local telemetry file: the events kept in local mode,
    /// the record of what was sent, and the logs. Pending events stay
    /// (`telemetry disable` deletes them).
    Clean,
    /// Start over with a new user id; pending events are deleted.
    Reset,
    /// Ask the backend to delete everything stored for your user id, then reset.
    /// The request carries a proof made with your profile's telemetry_secret
    /// (the secret itself never leaves this machine).
    Forget,
    /// Print everything the backend holds about your user id, fetched with
    /// the same proof: first and last seen, country and region, platform,
    /// device id, runtime, versions, projects.
    Held {
        /// The backend's JSON answer as it is.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(app: &AppInfo, cmd: TelemetryCmd) -> ExitCode {
    let collector = Collector::new(app.clone());
    let result: Result<(), String> = match cmd {
        TelemetryCmd::Status { json } => {
            status(&collector, json);
            Ok(())
        }
        TelemetryCmd::Enable => collector.enable().map_err(|e| e.to_string()).map(|()| {
            let status = collector.status();
            out::println(&format!(
                "Telemetry is on in your profile. Now: {}.",
                status.explanation
            ));
        }),
        TelemetryCmd::Local => collector
            .keep_local()
            .map_err(|e| e.to_string())
            .map(|dropped| {
                out::println(
                    "Telemetry is local: each command's event is kept on this machine (`piperider telemetry show`) and never sent.",
                );
                if dropped > 0 {
                    out::println(&format!("Deleted {dropped} pending event(s)."));
                }
                let status = collector.status();
                if status.mode.as_str() != "local" {
                    out::println(&format!("Now: {}.", status.explanation));
                }
            }),
        TelemetryCmd::Sent {
            json,
            offline,
            bodies,
        } => return sent(&collector, json, offline, bodies),
        TelemetryCmd::Clean => collector.clean().map_err(|e| e.to_string()).map(|n| {
            out::println(&format!(
                "Deleted the local telemetry files ({n} event(s) kept in local mode, the record of what was sent, and the logs)."
            ));
        }),
        TelemetryCmd::Disable => collector
            .disable()
            .map_err(|e| e.to_string())
            .map(|dropped| {
                out::println("Telemetry is off: nothing will be collected or sent.");
                if dropped > 0 {
                    out::println(&format!("Deleted {dropped} pending event(s)."));
                }
            }),
        TelemetryCmd::Show => {
            // The headings go to stderr: stdout stays one event per line.
            let pending = collector.pending();
            match pending.len() {
                0 => out::eprint("No pending events.\n"),
                n => out::eprint(&format!("{n} pending event(s), to be sent:\n")),
            }
            for event in pending {
                out::println(&String::from_utf8_lossy(&event));
            }
            let kept = collector.kept_locally();
            if !kept.is_empty() {
                out::eprint(&format!(
                    "{} event(s) kept on this machine in local mode, never sent:\n",
                    kept.len()
                ));
            }
            for event in kept {
                out::println(&String::from_utf8_lossy(&event));
            }
            Ok(())
        }
        TelemetryCmd::Reset => collector.reset().map_err(|e| e.to_string()).map(|id| {
            out::println(&format!("New user id: {id}. Pending events were deleted."));
        }),
        TelemetryCmd::Forget => collector.forget().map_err(|e| e.to_string()).map(|id| {
            out::println("The backend was asked to delete everything stored for your old user id.");
            out::println(&format!("New user id: {id}."));
        }),
        TelemetryCmd::Held { json } => collector.held().map_err(|e| e.to_string()).map(|held| {
            if json {
                out::println(&serde_json::to_string_pretty(&held).unwrap_or_default());
            } else {
                out::println("The backend holds this about your user id:");
                let mut lines = Vec::new();
                flatten("", &held, &mut lines);
                out::println(&lines.join("\n"));
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            out::eprint(&format!("error: {message}\n"));
            ExitCode::from(1)
        }
    }
}

/// A JSON answer as `  path: value` lines (`platform.os: linux`,
/// `projects[0].project_id: ...`).
fn flatten(path: &str, value: &serde_json::Value, lines: &mut Vec<String>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                flatten(&p, v, lines);
            }
        }
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            let items: Vec<String> = items.iter().map(scalar).collect();
            lines.push(format!("  {path}: [{}]", items.join(", ")));
        }
        Value::Array(items) => {
            if items.is_empty() {
                lines.push(format!("  {path}: none"));
            }
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), v, lines);
            }
        }
        v => lines.push(format!("  {path}: {}", scalar(v))),
    }
}

fn scalar(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "none".into(),
        v => v.to_string(),
    }
}

fn status(collector: &Collector, json: bool) {
    let s = collector.status();
    if json {
        out::println(&serde_json::to_string_pretty(&s).unwrap_or_default());
        return;
    }
    let project = match (&s.project_id, &s.project_config) {
        (Some(id), Some(path)) => format!("{id} ({})", path.display()),
        (None, Some(path)) => format!("no telemetry.id in {}", path.display()),
        _ => "none (not inside a project)".into(),
    };
    out::println(&format!(
        "Telemetry is {}: {}\n  mode:           {} (from {})\n  rule:           {}\n  user id:        {}\n  profile:        {}\n  project:        {}\n  pending events: {} (dropped by the spool cap so far: {})\n  kept locally:   {}\n  endpoint:       {}{}",
        match (s.enabled, s.mode.as_str()) {
            (true, "local") => "local",
            (true, _) => "on",
            (false, _) => "off",
        },
        s.explanation,
        s.mode,
        s.mode_source,
        s.reason,
        s.user_id.as_deref().unwrap_or("none"),
        s.profile_path.display(),
        project,
        s.pending_events,
        s.dropped_events,
        s.local_events,
        s.endpoint.as_deref().unwrap_or("none"),
        if s.debug {
            "\n  debug:          on (events are printed, not sent)"
        } else {
            ""
        },
    ));
}

/// `telemetry sent`: exit 1 when a receipt or the backend's copy differs.
fn sent(collector: &Collector, json: bool, offline: bool, bodies: bool) -> ExitCode {
    use piperider_collector::{HeldCheck, ReceiptCheck};
    let batches = match collector.sent(!offline) {
        Ok(batches) => batches,
        Err(e) => {
            out::eprint(&format!(
                "error: reading the record of what was sent: {e}\n"
            ));
            return ExitCode::from(1);
        }
    };
    let bad = batches
        .iter()
        .any(|b| b.receipt == ReceiptCheck::Differs || matches!(b.held, HeldCheck::Changed { .. }));
    if json {
        out::println(&serde_json::to_string_pretty(&batches).unwrap_or_default());
    } else if batches.is_empty() {
        out::eprint("Nothing was sent in the last four weeks (or the record was cleaned).\n");
    } else {
        for b in &batches {
            let receipt = match b.receipt {
                ReceiptCheck::Matches => "receipt matches",
                ReceiptCheck::Differs => "RECEIPT DIFFERS from what was sent",
                ReceiptCheck::NoReceipt => "no receipt",
                ReceiptCheck::Unreadable => "UNREADABLE",
            };
            let held = match &b.held {
                HeldCheck::AsSent => "held as sent".to_string(),
                HeldCheck::Changed { event_ids } => {
                    format!("CHANGED on the backend: {}", event_ids.join(", "))
                }
                HeldCheck::NotHeld { events } => format!("{events} no longer held"),
                HeldCheck::NotChecked { reason } => format!("backend not checked: {reason}"),
            };
            out::println(&format!(
                "{}  {} event(s) to {} ({} accepted, {} duplicate, {} rejected): {receipt}; {held}",
                b.sent_at, b.events, b.endpoint, b.accepted, b.duplicate, b.rejected
            ));
            if bodies {
                out::println(&format!("  {}", String::from_utf8_lossy(&b.body)));
            }
        }
    }
    if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
