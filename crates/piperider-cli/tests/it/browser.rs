//! The HTML report in a real browser: headless Chromium opens it, and its
//! network log shows no request made by the page to any other host.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The URLs the page at `html` asked for while Chromium rendered it, or
/// `None` when no Chromium is installed (a failure where one is required).
pub(crate) fn page_requests(html: &Path) -> Option<Vec<String>> {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("PIPERIDER_REQUIRE_BROWSER").is_none(),
            "a browser is required here but no chromium is installed"
        );
        eprintln!("SKIPPED: no chromium installed; the browser check of the report did not run");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let netlog = dir.path().join("net.json");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1200,900",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(format!(
            "--screenshot={}",
            dir.path().join("report.png").display()
        ))
        .arg(format!("file://{}", html.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "chromium did not finish within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        dir.path().join("report.png").is_file(),
        "chromium rendered nothing"
    );
    let log: Value = serde_json::from_str(&std::fs::read_to_string(&netlog).unwrap()).unwrap();
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .unwrap();
    // The browser's own background requests carry no page site; the page's carry `file://`.
    Some(
        log["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"].as_u64() == Some(start_job))
            .filter(|e| {
                e["params"]["network_isolation_key"]
                    .as_str()
                    .is_some_and(|k| k.contains("file://"))
            })
            .filter_map(|e| e["params"]["url"].as_str().map(str::to_string))
            .filter(|url| !url.starts_with("file://"))
            .collect(),
    )
}

#[test]
fn the_check_sees_a_page_that_reaches_out() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("leaky.html");
    std::fs::write(
        &page,
        "<img src=\"http://example.invalid/pixel.png\"><p>leaky</p>",
    )
    .unwrap();
    if let Some(requests) = page_requests(&page) {
        assert_eq!(requests, ["http://example.invalid/pixel.png"]);
    }
}
