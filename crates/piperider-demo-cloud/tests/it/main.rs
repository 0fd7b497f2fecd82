//! The demo Cloud site with the real service, in a real browser.

mod browser;

/// A valid CLI event, now.
pub(crate) fn event() -> serde_json::Value {
    piperider_testkit::cli_event(
        "5f8c0a9e2b7d4e1fa3c6b9d2e4f7a1c3",
        "dc243c0c67204d4bb15740617505cb26",
    )
}
