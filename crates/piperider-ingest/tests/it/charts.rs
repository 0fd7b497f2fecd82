//! The dashboard's charts (`/v1/admin/charts/{name}`): retention cohorts,
//! version adoption across an upgrade and error rates against numbers
//! worked out by hand, filters, and CSV against JSON.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{Datelike, NaiveDate, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::{ADMIN_TOKEN, Db, Harness, PROJECT, on_both, run_sql};

/// The Monday `n` weeks before this week's.
fn monday(n: i64) -> NaiveDate {
    let today = Utc::now().date_naive();
    today - TimeDelta::days(i64::from(today.weekday().num_days_from_monday())) - TimeDelta::weeks(n)
}

fn user(n: u32) -> String {
    format!("{n:032x}")
}

/// An event of user `n` on `day` at noon.
fn at(n: u32, day: NaiveDate) -> Value {
    let mut e = piperider_testkit::cli_event(&user(n), PROJECT);
    e["timestamp"] = json!(format!("{day}T12:00:00Z"));
    e
}

async fn chart(h: &Harness, name: &str, query: &str) -> Value {
    let (status, body) = h
        .admin_get(&format!("/v1/admin/charts/{name}?{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{name}?{query}: {body}");
    body
}

async fn store(h: &Harness, events: Vec<Value>) {
    for chunk in events.chunks(200) {
        h.post_accepted(chunk).await;
    }
}

/// The row whose first cell is `key`.
fn row<'a>(chart: &'a Value, key: &str) -> &'a Vec<Value> {
    chart["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap())
        .find(|r| r[0] == key)
        .unwrap_or_else(|| panic!("no row {key}: {chart}"))
}

on_both!(
    retention_cohorts_match_shares_worked_by_hand,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let (w1, w2, w3) = (monday(6), monday(5), monday(4));
        // Cohort w1: users 1-4; cohort w2: users 5-6. Active weeks:
        // 1: w1 w2 w3; 2: w1 w3; 3: w1; 4: w1 w2; 5: w2 w3; 6: w2.
        let active: [(u32, &[NaiveDate]); 6] = [
            (1, &[w1, w2, w3]),
            (2, &[w1, w3]),
            (3, &[w1]),
            (4, &[w1, w2]),
            (5, &[w2, w3]),
            (6, &[w2]),
        ];
        let mut events = Vec::new();
        for (u, weeks) in active {
            for w in weeks {
                // Two days of the week: still one active week.
                events.push(at(u, *w + TimeDelta::days(1)));
                events.push(at(u, *w + TimeDelta::days(3)));
            }
        }
        store(&h, events).await;
        let to = monday(0) + TimeDelta::days(6);
        let c = chart(&h, "retention", &format!("from={w1}&to={to}")).await;
        let first = row(&c, &w1.to_string());
        // Of 4: week 1 (w2) users 1 and 4; week 2 (w3) users 1 and 2; then nobody.
        assert_eq!(first[1], 4, "{c}");
        assert_eq!(first[2], 0.5);
        assert_eq!(first[3], 0.5);
        assert_eq!(first[4], 0.0);
        let second = row(&c, &w2.to_string());
        // Of 2: week 1 (w3) user 5.
        assert_eq!(second[1], 2);
        assert_eq!(second[2], 0.5);
        assert_eq!(second[3], 0.0);
        // A week after `to` has no share yet.
        let c = chart(
            &h,
            "retention",
            &format!("from={w1}&to={}", w2 + TimeDelta::days(6)),
        )
        .await;
        let first = row(&c, &w1.to_string());
        assert_eq!(first[2], 0.5);
        assert_eq!(first[3], Value::Null, "{c}");
        assert_eq!(
            c["estimated"], false,
            "a handful of users is counted exactly"
        );
        h.finish().await;
    }
);

on_both!(version_adoption_follows_an_upgrade, |db: Db| async move {
    let Some(h) = Harness::start(db, |_| {}).await else {
        return;
    };
    let (w1, w2) = (monday(3), monday(2));
    let on = |u: u32, day: NaiveDate, version: &str, os: &str| {
        let mut e = at(u, day);
        e["app_version"] = json!(version);
        e["platform"]["os"] = json!(os);
        e
    };
    let events = vec![
        on(1, w1, "0.1.0", "linux"),
        on(2, w1, "0.1.0", "linux"),
        on(3, w1, "0.1.0", "linux"),
        on(4, w1, "0.1.0", "linux"),
        on(5, w1, "0.1.0", "macos"),
        // Week 2: users 1 and 2 upgrade on Tuesday (user 1 ran the old one on Monday too).
        on(1, w2, "0.1.0", "linux"),
        on(1, w2 + TimeDelta::days(1), "0.2.0", "linux"),
        on(2, w2 + TimeDelta::days(1), "0.2.0", "linux"),
        on(3, w2 + TimeDelta::days(2), "0.1.0", "linux"),
        on(5, w2 + TimeDelta::days(2), "0.2.0", "macos"),
    ];
    store(&h, events).await;
    let range = format!("from={w1}&to={}", w2 + TimeDelta::days(6));
    let c = chart(&h, "version_adoption", &format!("{range}&os=linux")).await;
    let share = |week: NaiveDate, version: &str| {
        c["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == week.to_string() && r[1] == version)
            .map(|r| (r[2].as_i64().unwrap(), r[3].as_f64().unwrap()))
    };
    assert_eq!(share(w1, "0.1.0"), Some((4, 1.0)), "{c}");
    assert_eq!(share(w1, "0.2.0"), None);
    // Week 2 on linux: 3 active; 0.2.0 users 1 and 2; 0.1.0 users 1 and 3.
    assert_eq!(share(w2, "0.2.0"), Some((2, 0.6667)));
    assert_eq!(share(w2, "0.1.0"), Some((2, 0.6667)));
    // Unfiltered, week 2 has user 5 on macos as well.
    let c = chart(&h, "version_adoption", &range).await;
    let all = c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == w2.to_string() && r[1] == "0.2.0")
        .cloned();
    assert_eq!(all, Some(json!([w2.to_string(), "0.2.0", 3, 0.75])), "{c}");
    // Weekly actives agree.
    let weekly = chart(&h, "active_users_weekly", &range).await;
    assert_eq!(row(&weekly, &w1.to_string())[1], 5);
    assert_eq!(row(&weekly, &w2.to_string())[1], 4);
    h.finish().await;
});

on_both!(
    error_rates_and_durations_per_command_and_version,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let day = monday(1) + TimeDelta::days(2);
        let make = |u: u32, command: &str, version: &str, ok: bool, ms: u64, ci: bool| {
            let mut e = at(u, day);
            e["event_type"] = json!(command);
            e["app_version"] = json!(version);
            e["outcome"] = json!({"status": if ok { "ok" } else { "error" }, "duration_ms": ms});
            if ci {
                e["ci"] = json!("github_actions");
            }
            e
        };
        let mut events = Vec::new();
        // run: 4 events, 1 error; init: 2 events, 2 errors.
        for (i, ok) in [true, true, true, false].into_iter().enumerate() {
            events.push(make(1, "run", "0.1.0", ok, 100 * (i as u64 + 1), false));
        }
        events.push(make(2, "init", "0.2.0", false, 50, true));
        events.push(make(2, "init", "0.2.0", false, 50, true));
        store(&h, events).await;
        let range = format!("from={day}&to={day}");
        let c = chart(&h, "errors_by_command", &range).await;
        assert_eq!(
            row(&c, "run")[1..],
            [json!(4), json!(1), json!(0.25)],
            "{c}"
        );
        assert_eq!(row(&c, "init")[1..], [json!(2), json!(2), json!(1.0)]);
        let c = chart(&h, "errors_by_version", &range).await;
        assert_eq!(
            row(&c, "0.1.0")[1..],
            [json!(4), json!(1), json!(0.25)],
            "{c}"
        );
        assert_eq!(row(&c, "0.2.0")[1..], [json!(2), json!(2), json!(1.0)]);
        // Filtered to CI: only the two init events.
        let c = chart(&h, "errors_by_command", &format!("{range}&ci=ci")).await;
        assert_eq!(c["rows"].as_array().unwrap().len(), 1, "{c}");
        assert_eq!(c["filters"], json!({"ci": "ci"}));
        // Two filters at once read the full segments.
        let c = chart(
            &h,
            "errors_by_command",
            &format!("{range}&ci=interactive&app_version=0.1.0"),
        )
        .await;
        assert_eq!(c["rows"], json!([["run", 4, 1, 0.25]]), "{c}");
        // Durations 100, 200, 300, 400 ms: p50 200, p90 400, within 4.5%.
        let c = chart(&h, "durations", &range).await;
        let run = row(&c, "run");
        let near = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() / want <= 0.045;
        assert!(near(&run[2], 200.0) && near(&run[3], 400.0), "{c}");
        assert_eq!(c["estimated"], true, "percentiles are estimates");
        // CI share of the week.
        let c = chart(&h, "ci_share", &range).await;
        assert_eq!(
            c["rows"][0].as_array().unwrap()[1..4],
            [json!(2), json!(4), json!(0.3333)],
            "{c}"
        );
        h.finish().await;
    }
);

on_both!(
    csv_holds_the_json_numbers_and_bad_queries_are_refused,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let day = monday(1);
        store(&h, (1..=7).map(|u| at(u, day)).collect()).await;
        let range = format!("from={day}&to={}", day + TimeDelta::days(6));
        for name in [
            "summary",
            "active_users_daily",
            "users_by_os",
            "commands_daily",
            "figures_daily",
        ] {
            let json = chart(&h, name, &range).await;
            let request = Request::get(format!("/v1/admin/charts/{name}?{range}&format=csv"))
                .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                .body(Body::empty())
                .unwrap();
            let (status, headers, body) = h.send("127.0.0.1", request).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
            let text = String::from_utf8(body.to_vec()).unwrap();
            let mut lines = text.lines();
            let header: Vec<String> = json["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(lines.next().unwrap(), header.join(","));
            for (line, row) in lines.zip(json["rows"].as_array().unwrap()) {
                let cells: Vec<String> = row
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    })
                    .collect();
                assert_eq!(line, cells.join(","), "{name}");
            }
        }
        let summary = chart(&h, "summary", &range).await;
        assert_eq!(summary["rows"][0][0], 7, "{summary}");
        assert_eq!(summary["rows"][0][1], 7, "first seen that week");
        for (query, reason) in [
            ("ci=sometimes", "`ci` must be ci or interactive"),
            ("format=xml", "format must be json or csv"),
            ("from=yesterday", "`from` must be a date"),
        ] {
            let (status, body) = h
                .admin_get(&format!("/v1/admin/charts/summary?{query}"))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
            assert!(
                body["reason"].as_str().unwrap().starts_with(reason),
                "{body}"
            );
        }
        let long = "x".repeat(200);
        let (status, body) = h
            .admin_get(&format!("/v1/admin/charts/summary?os={long}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            !body.to_string().contains(&long),
            "the reason does not repeat the input"
        );
        let (status, _) = h.admin_get("/v1/admin/charts/no_such_chart").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, list) = h.admin_get("/v1/admin/charts").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["charts"].as_array().unwrap().len(), 18);
        h.finish().await;
    }
);

on_both!(
    a_database_from_before_the_cube_gets_it_built_from_its_events,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        let (w1, w2) = (monday(3), monday(2));
        let mut events = Vec::new();
        for u in 1..=40 {
            events.push(at(u, w1 + TimeDelta::days(i64::from(u % 5))));
            if u % 3 == 0 {
                let mut e = at(u, w2 + TimeDelta::days(1));
                e["app_version"] = json!("0.3.0");
                e["outcome"] = json!({"status": "error", "duration_ms": 90});
                events.push(e);
            }
        }
        store(&h, events).await;
        let range = format!("from={w1}&to={}", w2 + TimeDelta::days(6));
        let names = [
            "summary",
            "retention",
            "version_adoption",
            "errors_by_version",
            "durations",
            "users_by_os",
        ];
        let mut before = Vec::new();
        for name in names {
            before.push(chart(&h, name, &range).await);
        }
        // As before the cube: its tables empty, and what marks its events as in it gone.
        let h = h
        .reopen(async |url: &str| {
            let forget = "DELETE FROM cube_counts; DELETE FROM cube_sketches; DELETE FROM cohort_sketches; DELETE FROM segments;";
            if url.starts_with("sqlite:") {
                run_sql(url, &format!("{forget} DELETE FROM settings WHERE key = 'cube_watermark';")).await;
            } else {
                run_sql(url, &format!("{forget} INSERT INTO cube_queue SELECT CAST(event_id AS uuid) FROM events;")).await;
            }
        })
        .await;
        for (name, want) in names.into_iter().zip(&before) {
            assert_eq!(&chart(&h, name, &range).await, want, "{name}");
        }
        // Built once: reopening changes nothing.
        let h = h.reopen(async |_: &str| {}).await;
        for (name, want) in names.into_iter().zip(&before) {
            assert_eq!(&chart(&h, name, &range).await, want, "{name}");
        }
        h.finish().await;
    }
);

on_both!(
    two_filters_over_whole_months_read_the_full_segments_days,
    |db: Db| async move {
        let Some(h) = Harness::start(db, |_| {}).await else {
            return;
        };
        // Last month, whole: read from month rows, except for the full
        // segments (two filters), which keep only day rows.
        let this_month = Utc::now().date_naive().with_day(1).unwrap();
        let first = (this_month - TimeDelta::days(1)).with_day(1).unwrap();
        let last = this_month - TimeDelta::days(1);
        let make = |u: u32, day: NaiveDate, version: &str, ci: bool| {
            let mut e = at(u, day);
            e["app_version"] = json!(version);
            if ci {
                e["ci"] = json!("github_actions");
            }
            e
        };
        store(
            &h,
            vec![
                // Users 1 and 2 interactive on 0.1.0, on two days (1 twice).
                make(1, first + TimeDelta::days(2), "0.1.0", false),
                make(1, first + TimeDelta::days(20), "0.1.0", false),
                make(2, last, "0.1.0", false),
                // Not matching one filter or the other.
                make(3, first + TimeDelta::days(2), "0.1.0", true),
                make(4, first + TimeDelta::days(2), "0.2.0", false),
            ],
        )
        .await;
        let query = format!("from={first}&to={last}&ci=interactive&app_version=0.1.0");
        let month = &first.to_string()[..7];
        let c = chart(&h, "active_users_monthly", &query).await;
        assert_eq!(row(&c, month)[1], 2, "{c}");
        let c = chart(&h, "errors_by_command", &query).await;
        assert_eq!(c["rows"], json!([["run", 3, 0, 0.0]]), "{c}");
        let c = chart(&h, "summary", &query).await;
        assert_eq!(c["rows"][0][0], 2, "active users: {c}");
        // One filter: the month rows of a marginal segment.
        let c = chart(
            &h,
            "active_users_monthly",
            &format!("from={first}&to={last}&ci=interactive"),
        )
        .await;
        assert_eq!(row(&c, month)[1], 3, "{c}");
        // Breakdowns, users and commands per value: from the month rows
        // (no filter), and from the full segments' days (two filters).
        let c = chart(
            &h,
            "users_by_app_version",
            &format!("from={first}&to={last}"),
        )
        .await;
        assert_eq!(c["rows"], json!([["0.1.0", 3, 4], ["0.2.0", 1, 1]]), "{c}");
        let c = chart(&h, "users_by_ci", &query).await;
        assert_eq!(c["rows"], json!([["interactive", 2, 3]]), "{c}");
        h.finish().await;
    }
);
