//! Export and import between SQLite and PostgreSQL: identical figures,
//! idempotent, tombstones and owner keys travel, bad files refused.

use axum::http::StatusCode;
use piperider_ingest::storage::transfer::{TransferError, export, import};
use serde_json::Value;

use crate::{Db, Harness, deletion, event, owned_event, owner};

async fn export_bytes(h: &Harness) -> Vec<u8> {
    let mut out = Vec::new();
    export(&h.url(), &mut out).await.unwrap();
    out
}

async fn import_bytes(
    url: &str,
    bytes: &[u8],
) -> Result<piperider_ingest::storage::transfer::ImportReport, TransferError> {
    import(url, &mut &bytes[..]).await
}

/// The dashboard's figures (the stats and every chart) and one user's report.
async fn figures(h: &Harness, user: &str) -> (Value, Value) {
    let (status, mut stats) = h.admin_get("/v1/admin/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    for (name, _) in piperider_ingest::storage::insights::CHARTS {
        let (status, chart) = h.admin_get(&format!("/v1/admin/charts/{name}")).await;
        assert_eq!(status, StatusCode::OK, "{chart}");
        stats[format!("chart {name}")] = chart;
    }
    let (status, report) = h.admin_get(&format!("/v1/admin/users/{user}")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    (stats, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_to_sqlite_keeps_every_figure_and_every_deletion() {
    let Some(pg) = Harness::start(Db::Postgres, |_| {}).await else {
        return;
    };
    let src = Harness::start(Db::Sqlite, |_| {}).await.unwrap();
    let kept = format!("{:032x}", 0xfeed);
    let gone = format!("{:032x}", 0xdead);
    let secret = owner(3);
    for i in 0..12u32 {
        let user = format!("{:032x}", 0xbeef00 + i);
        let (status, body) = src.post_batch(&[event(&user), event(&user)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    src.post_batch(&[owned_event(&kept, &owner(4))]).await;
    src.post_batch(&[owned_event(&gone, &secret)]).await;
    let (status, _) = src
        .post_json("/v1/deletion-requests", deletion(&gone, &secret))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Events the live writer may still hold back from the rollups: the
    // export marks them, and the target rolls them up itself.
    src.post_batch(&[event(&kept), event(&kept), event(&kept)])
        .await;
    let bytes = export_bytes(&src).await;
    let (stats, report) = figures(&src, &kept).await;
    assert_eq!(stats["totals"]["events"], 29, "{stats}");

    // Into PostgreSQL, twice.
    let imported = std::sync::Mutex::new(None);
    let pg = pg
        .reopen(async |url: &str| {
            *imported.lock().unwrap() = Some(import_bytes(url, &bytes).await.unwrap());
        })
        .await;
    let first = imported.lock().unwrap().take().unwrap();
    assert!(
        first.inserted > 0 && first.inserted == first.rows,
        "{first:?}"
    );
    assert_eq!(figures(&pg, &kept).await, (stats.clone(), report.clone()));
    let pg = pg
        .reopen(async |url: &str| {
            *imported.lock().unwrap() = Some(import_bytes(url, &bytes).await.unwrap());
        })
        .await;
    let again = imported.lock().unwrap().take().unwrap();
    assert_eq!(
        (again.rows, again.inserted),
        (first.rows, 0),
        "importing twice changes nothing"
    );
    assert_eq!(figures(&pg, &kept).await, (stats.clone(), report.clone()));

    // Back into a new SQLite file, gzip on the way.
    let back = export_bytes(&pg).await;
    let dst = Harness::start(Db::Sqlite, |_| {}).await.unwrap();
    let dst = dst
        .reopen(async |url: &str| {
            import_bytes(url, &back).await.unwrap();
        })
        .await;
    assert_eq!(figures(&dst, &kept).await, (stats.clone(), report.clone()));
    // A reopened writer does not count the imported events again.
    let dst = dst.reopen(async |_: &str| {}).await;
    assert_eq!(figures(&dst, &kept).await, (stats, report));

    // The deleted user stays deleted: its queued events are dropped.
    let (_, body) = dst.post_batch(&[owned_event(&gone, &secret)]).await;
    assert_eq!(body["results"][0]["status"], "rejected", "{body}");
    assert_eq!(body["results"][0]["field"], "user_id");

    for h in [src, pg, dst] {
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_file_a_forged_line_and_a_target_with_other_data_are_refused() {
    let src = Harness::start(Db::Sqlite, |_| {}).await.unwrap();
    src.post_batch(&[event(&format!("{:032x}", 7))]).await;
    let bytes = export_bytes(&src).await;
    let text = String::from_utf8(bytes.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let target = Harness::start(Db::Sqlite, |_| {}).await.unwrap();
    let url = target.url();
    target.store().close().await;

    let cut = lines[..lines.len() - 1].join("\n");
    let err = import_bytes(&url, cut.as_bytes())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("without its last line"), "{err}");
    let forged = text.replacen("\"table\":\"events\"", "\"table\":\"quarantine\"", 1);
    let err = import_bytes(&url, forged.as_bytes())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("line ") && err.contains("unknown table"),
        "{err}"
    );
    assert!(
        !err.contains("quarantine"),
        "the input is not repeated: {err}"
    );

    // The source itself holds data under its own salt; another export
    // (another salt) is refused there.
    let other = Harness::start(Db::Sqlite, |_| {}).await.unwrap();
    other.post_batch(&[event(&format!("{:032x}", 8))]).await;
    let foreign = export_bytes(&other).await;
    let err = import_bytes(&src.url(), &foreign)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("another user-hash salt"), "{err}");
    for h in [src, other] {
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_gzip_to_a_file_and_imports_it() {
    let src = Harness::start(Db::Sqlite, |_| {}).await.unwrap();
    src.post_batch(&[
        event(&format!("{:032x}", 9)),
        event(&format!("{:032x}", 10)),
    ])
    .await;
    let (stats, _) = figures(&src, &format!("{:032x}", 9)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.ndjson.gz");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_piperider-ingest"))
            .args(args)
            .env_remove("PIPERIDER_INGEST_DATABASE_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {stderr}");
        stderr
    };
    let said = run(&[
        "export",
        "--database-url",
        &src.url(),
        "--gzip",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(said.contains("exported "), "{said}");
    assert_eq!(std::fs::read(&file).unwrap()[..2], [0x1f, 0x8b], "gzip");
    let dst = Harness::start(Db::Sqlite, |_| {}).await.unwrap();
    let url = dst.url();
    let dst = dst
        .reopen(async |_: &str| {
            let said = run(&[
                "import",
                "--database-url",
                &url,
                "--input",
                file.to_str().unwrap(),
            ]);
            assert!(said.contains("inserted "), "{said}");
        })
        .await;
    assert_eq!(figures(&dst, &format!("{:032x}", 9)).await.0, stats);
    for h in [src, dst] {
        h.finish().await;
    }
}
