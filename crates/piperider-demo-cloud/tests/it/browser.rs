//! The consent banner and Cloud telemetry in a real browser: headless
//! Chromium driven through chromedriver (WebDriver over HTTP), against the
//! demo Cloud site served by the real service. Each test counts, at the
//! server, every request the page made to the telemetry endpoint, and says
//! which request broke the rule.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use piperider_consent::{Choice, ConsentRecord, Policy};
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const DASHBOARD_TOKEN: &str = "dashboard-admin-token-0123456789";

fn browser_available() -> bool {
    let found = Command::new("chromedriver")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new("chromium")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("PIPERIDER_REQUIRE_BROWSER").is_none(),
            "a browser is required here but chromium or chromedriver is missing"
        );
        eprintln!(
            "SKIPPED: chromium or chromedriver is not installed; the browser tests did not run"
        );
    }
    found
}

/// The service with the demo site, on a loopback port, on its own runtime.
struct Site {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    state: std::sync::Arc<std::sync::Mutex<Option<piperider_ingest::AppState>>>,
}

impl Site {
    fn start(db: &std::path::Path, policy: u32) -> Site {
        let url = format!("sqlite:{}", db.display());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = std::sync::Arc::new(std::sync::Mutex::new(None));
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut config = piperider_ingest::Config::for_database(&url);
                config.admin_token = Some(DASHBOARD_TOKEN.into());
                config.consent_policy_version = policy;
                let store = piperider_ingest::Store::connect(&url).await.unwrap();
                let app_state = piperider_ingest::AppState::new(
                    config,
                    store.clone(),
                    piperider_ingest::Geo::default(),
                )
                .await
                .unwrap();
                *shared.lock().unwrap() = Some(app_state.clone());
                let router = piperider_ingest::app(app_state).merge(piperider_demo_cloud::routes());
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
                // The writer lets go of the file, for the next site on it.
                store.close().await;
            });
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while state.lock().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the site did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Site {
            addr,
            stop: Some(stop),
            thread: Some(thread),
            state,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn app(&self) -> piperider_ingest::AppState {
        self.state.lock().unwrap().clone().unwrap()
    }

    /// Requests the page made to the telemetry endpoint, by status (from the service's metrics).
    fn telemetry_requests(&self) -> u64 {
        let metrics: String = ureq::get(self.url("/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("piperider_ingest_requests_total{")
                    && l.contains("route=\"/v1/cloud/events\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    fn stored_types(&self) -> Vec<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = self.app().store().clone();
        runtime.block_on(async move { store.cloud_event_types_for_tests().await.unwrap() })
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.state.lock().unwrap().take();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A headless Chromium session through chromedriver.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     format!("--user-data-dir={}", profile.path().display())]
        }}}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            _profile: profile,
        };
        let answer = b.call("POST", "/session", Some(caps));
        b.session = answer["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = match method {
            "GET" => agent.get(&url).call().unwrap(),
            "DELETE" => agent.delete(&url).call().unwrap(),
            _ => agent
                .post(&url)
                .send_json(body.unwrap_or(json!({})))
                .unwrap(),
        };
        let text = response.body_mut().read_to_string().unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            v["value"]["error"].is_null(),
            "WebDriver {method} {path}: {}",
            v["value"]
        );
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
        self.wait_consent();
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Waits until the script has asked the server for the state.
    fn wait_consent(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v =
                self.js("return document.body ? document.body.getAttribute('data-consent') : null");
            if let Some(s) = v.as_str() {
                return s.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the consent script never settled"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn click(&self, css: &str) {
        let el = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        let id = el[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string();
        self.call("POST", &format!("/element/{id}/click"), None);
    }

    /// Waits until the page's consent state is `expected`.
    fn wait_state(&self, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.wait_consent() != expected {
            assert!(
                Instant::now() < deadline,
                "the consent state never became {expected}"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Clicks something that loads a new page, and waits for that page's consent state.
    fn click_away(&self, css: &str) {
        self.js("window.__before_click = true; return true;");
        self.click(css);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = self.js(
                "return window.__before_click === undefined && !!document.body && document.body.getAttribute('data-consent') !== null",
            );
            if ready == json!(true) {
                return;
            }
            assert!(Instant::now() < deadline, "clicking {css} loaded no page");
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn exists(&self, css: &str) -> bool {
        self.js(&format!("return document.querySelector({css:?}) !== null")) == json!(true)
    }

    fn cookies(&self) -> Vec<String> {
        self.call("GET", "/cookie", None)
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn visitor_id(&self) -> Value {
        self.js("return window.localStorage.getItem('piperider_visitor_id')")
    }

    fn storage_keys(&self) -> Value {
        self.js(
            "return Object.keys(window.localStorage).concat(Object.keys(window.sessionStorage))",
        )
    }

    /// Lets the requests the page started arrive at the server.
    fn settle(&self) {
        std::thread::sleep(Duration::from_millis(400));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn tour(b: &Browser, site: &Site) {
    for path in [
        "/",
        "/reports/1",
        "/compare",
        "/trend",
        "/profile",
        "/feedback",
    ] {
        b.go(&site.url(path));
    }
}

fn assert_no_telemetry(b: &Browser, site: &Site, when: &str) {
    b.settle();
    assert_eq!(
        site.telemetry_requests(),
        0,
        "{when}: a request reached /v1/cloud/events"
    );
    assert_eq!(
        b.visitor_id(),
        Value::Null,
        "{when}: a telemetry id was stored"
    );
    assert_eq!(
        b.storage_keys(),
        json!([]),
        "{when}: telemetry storage was set"
    );
    assert!(
        b.cookies()
            .iter()
            .all(|c| c == "piperider_consent" || c == "piperider_session"),
        "{when}: cookies {:?}",
        b.cookies()
    );
    assert!(
        site.stored_types().is_empty(),
        "{when}: the backend stored Cloud events"
    );
}

/// One browser test at a time: each runs a Chromium of its own.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A site on a fresh database and a browser, or `None` without a browser.
fn setup(
    policy: u32,
) -> Option<(
    std::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    Site,
    Browser,
)> {
    if !browser_available() {
        return None;
    }
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(&dir.path().join("cloud.db"), policy);
    let browser = Browser::start();
    Some((guard, dir, site, browser))
}

fn accept_all(b: &Browser, site: &Site) {
    b.go(&site.url("/"));
    b.click("button[data-choice=accept_all]");
    b.wait_state("granted");
    // The page view the choice sends is on its way; let it arrive.
    b.settle();
}

#[test]
fn before_a_choice_the_banner_shows_two_equal_buttons_and_nothing_is_sent() {
    let Some((_g, _d, site, b)) = setup(1) else {
        return;
    };
    b.go(&site.url("/"));
    assert_eq!(b.wait_consent(), "pending");
    assert!(b.exists("#consent-banner"), "no banner on the first visit");
    assert_eq!(
        b.js("return document.querySelector('#consent-banner p.consent-text').textContent;"),
        piperider_consent::chain::BANNER_TEXT
    );
    assert!(
        !b.exists("#consent-banner p.consent-gpc"),
        "a GPC line without the signal"
    );
    let style = b.js("return Array.from(document.querySelectorAll('#consent-banner button.consent-choice')).map(function (b) { var c = getComputedStyle(b); return [b.textContent, c.fontSize, c.fontWeight, c.backgroundColor, c.color, c.borderStyle, b.offsetHeight]; });");
    let buttons = style.as_array().unwrap();
    assert_eq!(buttons.len(), 2, "{style}");
    assert_eq!(buttons[0][0], "Accept All");
    assert_eq!(buttons[1][0], "Necessary Only");
    assert_eq!(
        buttons[0].as_array().unwrap()[1..],
        buttons[1].as_array().unwrap()[1..],
        "the two choices differ in weight: {style}"
    );
    assert_eq!(
        b.js("return document.activeElement && document.activeElement.className"),
        "consent-choice",
        "the banner is not reachable by keyboard"
    );
    tour(&b, &site);
    // Actions while the banner waits for an answer send nothing either.
    b.go(&site.url("/reports/1"));
    b.click("#share");
    b.go(&site.url("/compare"));
    b.click_away("#compare");
    assert_no_telemetry(&b, &site, "before a choice");
    assert!(
        b.cookies().is_empty(),
        "cookies before a choice: {:?}",
        b.cookies()
    );
}

#[test]
fn necessary_only_keeps_log_in_working_and_sends_nothing() {
    let Some((_g, _d, site, b)) = setup(1) else {
        return;
    };
    b.go(&site.url("/"));
    b.click("button[data-choice=necessary_only]");
    b.wait_state("denied");
    b.go(&site.url("/login"));
    b.click_away("#login");
    assert!(b.exists("#logout"), "log in failed under Necessary Only");
    tour(&b, &site);
    b.go(&site.url("/reports/1"));
    b.click("#share");
    assert_no_telemetry(&b, &site, "under Necessary Only");
}

#[test]
fn accept_all_sends_a_page_view_every_action_the_sources_and_the_metric() {
    let Some((_g, _d, site, b)) = setup(1) else {
        return;
    };
    b.go(&site.url("/login"));
    b.click("button[data-choice=accept_all]");
    b.wait_state("granted");
    assert!(b.visitor_id().is_string());
    b.click_away("#login");
    b.go(&site.url("/"));
    b.click_away("#upload");
    b.go(&site.url("/reports/1"));
    b.click("#share");
    b.go(&site.url("/compare"));
    b.click_away("#compare");
    b.go(&site.url("/trend"));
    b.js("var s = document.getElementById('metric'); s.value = 'null_ratio'; s.dispatchEvent(new Event('change')); return true;");
    b.go(&site.url("/profile"));
    b.click_away("#save-profile");
    b.go(&site.url("/feedback"));
    b.click("#open-feedback");
    b.click_away("#send-feedback");
    b.click_away("#logout");
    b.settle();
    let mut stored = site.stored_types();
    stored.dedup();
    let mut all: Vec<String> = piperider_event::CloudEventType::ALL
        .iter()
        .map(|t| t.as_str().to_string())
        .collect();
    all.sort();
    assert_eq!(stored, all, "Cloud events stored under Accept All");
}

#[test]
fn withdrawal_through_cookie_settings_stops_telemetry_and_deletes_its_storage() {
    let Some((_g, _d, site, b)) = setup(1) else {
        return;
    };
    accept_all(&b, &site);
    b.go(&site.url("/reports/1"));
    b.click("#share");
    b.settle();
    let before = site.telemetry_requests();
    assert!(before >= 1, "Accept All sent no page view");
    assert!(
        !site.stored_types().is_empty(),
        "nothing was stored under Accept All"
    );
    b.click("#cookie-settings");
    b.click("button[data-choice=necessary_only]");
    b.wait_state("denied");
    // The backend deleted what it had stored for this visitor.
    assert_eq!(
        site.stored_types(),
        Vec::<String>::new(),
        "Cloud events survived the withdrawal"
    );
    assert_eq!(
        b.visitor_id(),
        Value::Null,
        "withdrawal left the telemetry id"
    );
    assert_eq!(b.storage_keys(), json!([]));
    tour(&b, &site);
    b.settle();
    assert_eq!(
        site.telemetry_requests(),
        before,
        "a telemetry request after withdrawal"
    );
}

#[test]
fn a_policy_bump_asks_again_and_sends_nothing_until_the_new_choice() {
    let Some((_g, dir, site, b)) = setup(1) else {
        return;
    };
    accept_all(&b, &site);
    drop(site);
    let site = Site::start(&dir.path().join("cloud.db"), 2);
    let before = site.telemetry_requests();
    b.go(&site.url("/"));
    assert_eq!(
        b.wait_consent(),
        "pending",
        "an Accept All of the old policy still counts"
    );
    assert!(b.exists("#consent-banner"));
    tour(&b, &site);
    b.settle();
    assert_eq!(
        site.telemetry_requests(),
        before,
        "sent under an old policy's consent"
    );
    accept_all(&b, &site);
    assert!(
        site.telemetry_requests() > before,
        "the new choice sent nothing"
    );
}

#[test]
fn a_tampered_or_expired_cookie_reads_as_pending() {
    let Some((_g, _d, site, b)) = setup(1) else {
        return;
    };
    let app = site.app();
    let policy = Policy::new(1);
    let old = ConsentRecord::new(
        Choice::AcceptAll,
        &policy,
        chrono::Utc::now() - chrono::TimeDelta::days(200),
        false,
    );
    let expired = app.consent_cookie_for_tests(&old);
    let refusal = ConsentRecord::new(Choice::NecessaryOnly, &policy, chrono::Utc::now(), false);
    let signed = app.consent_cookie_for_tests(&refusal);
    let (payload, tag) = signed.split_once('.').unwrap();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let forged = String::from_utf8(engine.decode(payload).unwrap())
        .unwrap()
        .replace("necessary_only", "accept_all");
    let tampered = format!("{}.{tag}", engine.encode(forged));
    b.go(&site.url("/"));
    for (name, value) in [("expired", expired), ("tampered", tampered)] {
        b.call("DELETE", "/cookie", None);
        b.call(
            "POST",
            "/cookie",
            Some(json!({"cookie": {"name": "piperider_consent", "value": value, "path": "/"}})),
        );
        b.go(&site.url("/trend"));
        assert_eq!(b.wait_consent(), "pending", "a {name} cookie counted");
        assert!(
            b.exists("#consent-banner"),
            "no banner with a {name} cookie"
        );
        b.settle();
        assert_eq!(site.telemetry_requests(), 0, "sent with a {name} cookie");
    }
}

#[test]
fn with_gpc_on_nothing_is_sent_before_an_explicit_accept_all() {
    let Some((_g, _d, site, b)) = setup(1) else {
        return;
    };
    b.call(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Network.enable", "params": {}})),
    );
    b.call(
        "POST",
        "/goog/cdp/execute",
        Some(
            json!({"cmd": "Network.setExtraHTTPHeaders", "params": {"headers": {"Sec-GPC": "1"}}}),
        ),
    );
    b.go(&site.url("/"));
    assert_eq!(b.wait_consent(), "pending");
    // The banner says the signal is honoured, in the text whose hash the
    // decision's record keeps.
    assert_eq!(
        b.js("var p = document.querySelector('#consent-banner p.consent-gpc'); return p && p.textContent;"),
        piperider_consent::chain::GPC_TEXT
    );
    tour(&b, &site);
    b.settle();
    assert_eq!(
        site.telemetry_requests(),
        0,
        "sent under GPC before any choice"
    );
    accept_all(&b, &site);
    b.settle();
    assert!(
        site.telemetry_requests() > 0,
        "an explicit Accept All under GPC sent nothing"
    );
}

#[test]
fn the_dashboard_shows_real_events_as_charts() {
    let Some((_g, _d, site, b)) = setup(1) else {
        return;
    };
    // Real events: CLI runs through the ingestion endpoint, Cloud visits through the browser.
    let events: Vec<Value> = (0..3).map(|_| crate::event()).collect();
    let mut answer = ureq::post(site.url("/v1/batch"))
        .header("content-type", "application/json")
        .send(json!({"events": events}).to_string())
        .unwrap();
    assert_eq!(
        answer.status(),
        200,
        "{}",
        answer.body_mut().read_to_string().unwrap()
    );
    accept_all(&b, &site);
    b.go(&site.url("/reports/1"));

    // The token goes in a form, never in the URL; a session cookie follows.
    b.call("POST", "/url", Some(json!({"url": site.url("/admin")})));
    assert!(b.exists("#token"), "no log-in form");
    log_in(&b);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.exists("#events") {
        assert!(
            Instant::now() < deadline,
            "the dashboard did not open after logging in"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = b.call("GET", "/url", None);
    assert!(
        !url.as_str().unwrap().contains(DASHBOARD_TOKEN),
        "the token is in the URL: {url}"
    );
    assert_eq!(
        b.js("return document.getElementById('events').textContent"),
        "3"
    );
    let charts = b.js("return Array.from(document.querySelectorAll('svg.chart, ol.bars')).map(function (s) { return s.closest('section').querySelector('h2').textContent; })");
    let charts: Vec<String> = charts
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for expected in [
        "Daily active and new users",
        "Commands per day",
        "Active users by platform",
        "Active users by data source type",
        "Weekly active users",
        "Cloud: page views by route",
        "Cloud: Accept All / Necessary Only",
    ] {
        assert!(
            charts.iter().any(|c| c == expected),
            "no {expected:?} chart among {charts:?}"
        );
    }
    let png = b.call("GET", "/screenshot", None);
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-artefacts");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("dashboard.png"), &bytes).unwrap();
    assert!(bytes.len() > 10_000, "an empty screenshot");
}

/// Types the admin token into the log-in form and sends it.
fn log_in(b: &Browser) {
    let field = b.call(
        "POST",
        "/element",
        Some(json!({"using": "css selector", "value": "#token"})),
    );
    let id = field[ELEMENT].as_str().unwrap().to_string();
    b.call(
        "POST",
        &format!("/element/{id}/value"),
        Some(json!({"text": DASHBOARD_TOKEN})),
    );
    b.click("#login");
}

/// axe-core's script (`PIPERIDER_AXE_JS`, which `cargo xtask test` sets
/// after `npm ci` in tools/axe): `None` outside it, which fails the test
/// where the browser tests are required.
fn axe_script() -> Option<String> {
    let path = std::env::var("PIPERIDER_AXE_JS").ok();
    match path.and_then(|p| std::fs::read_to_string(p).ok()) {
        Some(script) => Some(script),
        None => {
            assert!(
                std::env::var_os("PIPERIDER_REQUIRE_BROWSER").is_none(),
                "axe-core is required with the browser tests: PIPERIDER_AXE_JS names no readable file (cargo xtask test installs it)"
            );
            eprintln!("SKIPPED: axe-core is not installed; the accessibility check did not run");
            None
        }
    }
}

/// The serious and critical violations axe-core finds on the current page.
fn accessibility_violations(b: &Browser, axe: &str) -> Vec<Value> {
    let script = format!(
        "{axe}\nvar done = arguments[arguments.length - 1];\
         axe.run(document, {{resultTypes: ['violations']}}).then(function (r) {{\
           done(r.violations.map(function (v) {{ return {{id: v.id, impact: v.impact, help: v.help,\
             nodes: v.nodes.slice(0, 3).map(function (n) {{ return n.html; }})}}; }}));\
         }}, function (e) {{ done([{{id: 'axe-failed', impact: 'critical', help: String(e)}}]); }});"
    );
    let found = b.call(
        "POST",
        "/execute/async",
        Some(json!({"script": script, "args": []})),
    );
    found
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["impact"] == "serious" || v["impact"] == "critical")
        .cloned()
        .collect()
}

/// Waits until the page's address contains `part` and `css` is on it.
fn wait_for(b: &Browser, part: &str, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = b.call("GET", "/url", None);
        if url.as_str().unwrap().contains(part) && b.exists(css) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no page with {part} and {css}: at {url}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_dashboard_filters_by_clicking_downloads_the_apis_numbers_and_passes_axe() {
    let Some((_g, _d, site, b)) = setup(1) else {
        return;
    };
    let axe = axe_script();
    // Six users: linux with sqlite (2) and postgres (1), macos with sqlite and duckdb, windows with postgres.
    let people = [
        ("linux", "sqlite"),
        ("linux", "sqlite"),
        ("linux", "postgres"),
        ("macos", "sqlite"),
        ("macos", "duckdb"),
        ("windows", "postgres"),
    ];
    let events: Vec<Value> = people
        .iter()
        .enumerate()
        .map(|(i, (os, ds))| {
            let mut e = piperider_testkit::cli_event(
                &format!("{:032x}", i + 1),
                &format!("{:032x}", i + 100),
            );
            e["platform"]["os"] = json!(os);
            e["project"]["datasource_type"] = json!(ds);
            e
        })
        .collect();
    let answer = ureq::post(site.url("/v1/batch"))
        .header("content-type", "application/json")
        .send(json!({ "events": events }).to_string())
        .unwrap();
    assert_eq!(answer.status(), 200);

    b.call("POST", "/url", Some(json!({"url": site.url("/admin")})));
    wait_for(&b, "/admin", "#token");
    if let Some(axe) = &axe {
        let v = accessibility_violations(&b, axe);
        assert!(v.is_empty(), "the log-in page: {v:#?}");
    }
    log_in(&b);
    wait_for(&b, "/admin", "#events");
    assert_eq!(
        b.js("return document.getElementById('events').textContent"),
        "6"
    );
    if let Some(axe) = &axe {
        let v = accessibility_violations(&b, axe);
        assert!(v.is_empty(), "the dashboard: {v:#?}");
    }

    // Two filters, each by clicking a bar.
    b.click("#chart-users_by_os a[href*='os=linux']");
    wait_for(&b, "os=linux", "#events");
    assert_eq!(
        b.js("return document.getElementById('events').textContent"),
        "3"
    );
    b.click("#chart-users_by_datasource_type a[href*='datasource_type=sqlite']");
    wait_for(&b, "datasource_type=sqlite", "#events");
    assert_eq!(
        b.js("return document.getElementById('events').textContent"),
        "2"
    );
    let url = b.call("GET", "/url", None).as_str().unwrap().to_string();
    assert!(url.contains("os=linux"), "{url}");
    let chips = b.js("return Array.from(document.querySelectorAll('a.filter')).map(function (a) { return a.textContent; })");
    assert_eq!(chips.as_array().unwrap().len(), 2, "{chips}");

    // The CSV the page links to, fetched with the page's session, holds the admin API's numbers.
    let csv = b.call(
        "POST",
        "/execute/async",
        Some(json!({"script": "var done = arguments[arguments.length - 1];\
            fetch(document.querySelector('#chart-users_by_app_version a[download]').href)\
              .then(function (r) { return r.text(); }).then(done, function (e) { done('failed: ' + e); });", "args": []})),
    );
    let csv = csv.as_str().unwrap().to_string();
    let query = url.split_once('?').unwrap().1.to_string();
    let mut api = ureq::get(site.url(&format!("/v1/admin/charts/users_by_app_version?{query}")))
        .header("authorization", format!("Bearer {DASHBOARD_TOKEN}"))
        .call()
        .unwrap();
    let api: Value = serde_json::from_str(&api.body_mut().read_to_string().unwrap()).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("app_version,users,events"), "{csv}");
    let rows: Vec<String> = api["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = r.as_array().unwrap();
            format!("{},{},{}", r[0].as_str().unwrap(), r[1], r[2])
        })
        .collect();
    assert_eq!(lines.map(String::from).collect::<Vec<_>>(), rows);
    assert_eq!(rows, ["0.2.0,2,2"], "two linux users on sqlite");

    // The back button takes the second filter away again.
    b.call("POST", "/back", None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b
        .call("GET", "/url", None)
        .as_str()
        .unwrap()
        .contains("datasource_type")
    {
        assert!(Instant::now() < deadline, "back kept the filter");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for(&b, "os=linux", "#events");
    assert_eq!(
        b.js("return document.getElementById('events').textContent"),
        "3"
    );
}
