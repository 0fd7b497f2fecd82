//! Property tests of the request body path: arbitrary bytes, as sent or as
//! gzip, never panic the service and never store anything invalid.

use std::io::Write;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;

use crate::{CLIENT_IP, Db, Harness};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)))]

    #[test]
    fn arbitrary_bodies_never_panic_and_store_nothing(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        compress in any::<bool>(),
        raw_gzip in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async {
            let h = Harness::start(Db::Sqlite, |_| {}).await.unwrap();
            let payload = if compress { gzip(&body) } else { body.clone() };
            let mut request = Request::post("/v1/batch").header("content-type", "application/json");
            if compress || raw_gzip {
                request = request.header("content-encoding", "gzip");
            }
            let (status, _, _) = h.send(CLIENT_IP, request.body(Body::from(payload)).unwrap()).await;
            prop_assert!(status.is_client_error() || status == StatusCode::OK, "{status}");
            prop_assert_eq!(h.store().count_events().await.unwrap(), 0);
            let (health, _, _) = h.send(CLIENT_IP, Request::get("/healthz").body(Body::empty()).unwrap()).await;
            prop_assert_eq!(health, StatusCode::OK);
            h.finish().await;
            Ok(())
        })?;
    }
}
