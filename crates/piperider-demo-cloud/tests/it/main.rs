//! The demo Cloud site with the real service, in a real browser.

mod browser;

/// A valid CLI event, now.
pub(crate) fn event() -> serde_json::Value {
    serde_json::json!({
        "schema_version": 1,
        "event_id": uuid::Uuid::new_v4().to_string(),
        "event_type": "run",
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "user_id": "5f8c0a9e2b7d4e1fa3c6b9d2e4f7a1c3",
        "device_id": "9b2e4c7a1d3f5e8b0a6c2d4f7e9b1a3c5d7f9e2b4a6c8d0e1f3a5b7c9d2e4f6a",
        "platform": {"os": "linux", "arch": "x86_64", "os_version": "6.1.0-18-amd64"},
        "runtime": {"name": "python", "version": "3.11.7"},
        "app_version": "0.2.0",
        "initial_version": "0.1.0",
        "ci": null,
        "project": {"project_id": "dc243c0c67204d4bb15740617505cb26", "datasource_type": "sqlite"},
        "stats": {"tables": 2, "columns": 8, "rows": 30, "builtin_assertions": 4, "custom_assertions": 1, "passed_assertions": 4, "failed_assertions": 1},
        "outcome": {"status": "ok", "duration_ms": 812}
    })
}
