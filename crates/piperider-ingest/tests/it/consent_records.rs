//! Verifiable consent records: every decision chained by hash, exported
//! as JSON and CSV, a visitor's own receipt, an edit named by
//! `verify-consent`, pruning that keeps the rest verifiable.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use piperider_consent::chain::{ChainLink, banner_hash, verify};
use serde_json::{Value, json};

use crate::{CLIENT_IP, Db, Harness, on_both};

/// A decision from `ip`, with `cookie` and the GPC signal if asked; the new cookie.
async fn decide(h: &Harness, ip: &str, choice: &str, cookie: Option<&str>, gpc: bool) -> String {
    let mut request = Request::post("/v1/consent").header("content-type", "application/json");
    if let Some(c) = cookie {
        request = request.header("cookie", c);
    }
    if gpc {
        request = request.header("sec-gpc", "1");
    }
    let body = Body::from(json!({"choice": choice}).to_string());
    let (status, headers, body) = h.send(ip, request.body(body).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

async fn get(h: &Harness, path: &str, header: Option<(&str, &str)>) -> (StatusCode, String) {
    let mut request = Request::get(path);
    if let Some((k, v)) = header {
        request = request.header(k, v);
    }
    let (status, _, body) = h
        .send(CLIENT_IP, request.body(Body::empty()).unwrap())
        .await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn verify_consent(h: &Harness) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_piperider-ingest"))
        .args(["verify-consent", "--database-url", &h.url()])
        .env_remove("PIPERIDER_INGEST_DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

on_both!(
    every_decision_is_chained_and_an_edited_record_is_named,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let accepted = decide(&h, "198.51.100.1", "accept_all", None, false).await;
        decide(&h, "198.51.100.2", "necessary_only", None, true).await;
        decide(&h, "198.51.100.3", "accept_all", None, false).await;
        // The same browser withdraws (after the decision interval).
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
        let withdrawn = decide(&h, "198.51.100.1", "necessary_only", Some(&accepted), false).await;

        let (status, body) = h.admin_get("/v1/admin/consent-records").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let links: Vec<ChainLink> = serde_json::from_value(body["records"].clone()).unwrap();
        let kinds: Vec<&str> = links.iter().map(|l| l.entry.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["accept_all", "necessary_only", "accept_all", "withdraw"]
        );
        assert!(links[1].entry.gpc && !links[0].entry.gpc);
        assert_eq!(links[1].entry.banner_hash, banner_hash(true));
        assert_eq!(links[0].entry.banner_hash, banner_hash(false));
        assert_eq!(body["anchor"]["seq"], 0);
        let anchor = body["anchor"]["hash"].as_str().unwrap().to_string();
        assert_eq!(verify((0, &anchor), links.clone()), Ok(4));
        assert_eq!(body["next_after"], 4);

        // CSV, and the next page is empty.
        let (status, csv) = get_admin_text(&h, "/v1/admin/consent-records?format=csv").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(csv.lines().count(), 5, "{csv}");
        assert!(csv.lines().nth(4).unwrap().starts_with("4,"), "{csv}");
        assert!(csv.contains(&links[3].hash));
        let (_, next) = h.admin_get("/v1/admin/consent-records?after=4").await;
        assert_eq!(next["records"], json!([]));

        // The visitor's own receipt, by their cookie.
        let (status, receipt) = get(&h, "/v1/consent/receipt", Some(("cookie", &withdrawn))).await;
        assert_eq!(status, StatusCode::OK, "{receipt}");
        let receipt: Value = serde_json::from_str(&receipt).unwrap();
        assert_eq!(receipt["records"][0]["hash"], links[3].hash.as_str());
        assert_eq!(receipt["records"][0]["kind"], "withdraw");
        let (status, _) = get(&h, "/v1/consent/receipt", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // The banner is told the GPC signal was seen.
        let (_, answer) = get(&h, "/v1/consent", Some(("sec-gpc", "1"))).await;
        assert_eq!(serde_json::from_str::<Value>(&answer).unwrap()["gpc"], true);

        let (ok, said) = verify_consent(&h);
        assert!(ok, "{said}");
        assert!(said.contains("4 consent records hold"), "{said}");
        // One record edited in the database: named, and the command fails.
        h.execute(
            "UPDATE consent_records SET gpc = 1 - gpc WHERE seq = 2",
            "UPDATE consent_records SET gpc = 1 - gpc WHERE seq = 2",
        )
        .await;
        let (ok, said) = verify_consent(&h);
        assert!(!ok);
        assert!(
            said.contains("broken at record 2: its content does not match its hash"),
            "{said}"
        );
        h.finish().await;
    }
);

async fn get_admin_text(h: &Harness, path: &str) -> (StatusCode, String) {
    let request = Request::get(path)
        .header("authorization", format!("Bearer {}", crate::ADMIN_TOKEN))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = h.send("127.0.0.1", request).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

on_both!(
    pruned_records_leave_an_anchor_the_rest_verifies_from,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        for i in 1..=4 {
            decide(&h, &format!("198.51.100.{i}"), "accept_all", None, false).await;
        }
        // The first two expired more than twelve months ago.
        h.execute(
            "UPDATE consent_records SET expires_at = 0 WHERE seq <= 2",
            "UPDATE consent_records SET expires_at = 0 WHERE seq <= 2",
        )
        .await;
        h.state.run_retention(chrono::Utc::now()).await.unwrap();
        let (_, body) = h.admin_get("/v1/admin/consent-records").await;
        let links: Vec<ChainLink> = serde_json::from_value(body["records"].clone()).unwrap();
        assert_eq!(
            links.iter().map(|l| l.entry.seq).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(body["anchor"]["seq"], 2);
        assert_eq!(body["anchor"]["hash"].as_str().unwrap(), links[0].prev_hash);
        let (ok, said) = verify_consent(&h);
        assert!(
            ok && said.contains("2 consent records hold, from the anchor (record 2"),
            "{said}"
        );
        // A record removed after the anchor is caught too.
        h.execute(
            "DELETE FROM consent_records WHERE seq = 3",
            "DELETE FROM consent_records WHERE seq = 3",
        )
        .await;
        let (ok, said) = verify_consent(&h);
        assert!(!ok && said.contains("record 4: out of sequence"), "{said}");
        // New decisions go on from the chain's head.
        decide(&h, "198.51.100.9", "accept_all", None, false).await;
        let (_, body) = h.admin_get("/v1/admin/consent-records?after=4").await;
        assert_eq!(body["records"][0]["seq"], 5);
        h.finish().await;
    }
);
