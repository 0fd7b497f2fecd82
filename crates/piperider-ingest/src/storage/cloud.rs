//! PipeRider Cloud's storage: the consent decisions' audit trail and the
//! Cloud events stored with consent. These are written straight through
//! the pool (one row per request, no rollups), not by the group-commit
//! writers.

use std::collections::BTreeMap;

use super::error::StorageError;
use super::reports::Count;
use super::rows::day;
use super::{Store, on_pool};

impl Store {
    /// Deletes every Cloud event of one visitor (their consent was
    /// withdrawn); how many there were.
    pub(crate) async fn delete_visitor(&self, visitor_id: &str) -> Result<u64, StorageError> {
        on_pool!(&self.0.backend, pool => Ok(sqlx::query("DELETE FROM cloud_events WHERE visitor_id = $1")
            .bind(visitor_id)
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// Stores one Cloud event (once per `event_id`).
    pub(crate) async fn insert_cloud_event(
        &self,
        e: &piperider_event::CloudEvent,
        received_at: i64,
    ) -> Result<(), StorageError> {
        let sources = e.sources.as_ref().map(|s| s.join(","));
        // As for CLI events: a clock ahead of the receiver's counts as now.
        let at = chrono::DateTime::from_timestamp_millis(received_at)
            .map_or(e.timestamp, |now| e.timestamp.min(now));
        on_pool!(&self.0.backend, pool => {
            sqlx::query(
                "INSERT INTO cloud_events (event_id, received_at, ts, day, event_type, visitor_id, route, sources, metric) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(e.event_id.to_string())
            .bind(received_at)
            .bind(at.timestamp_millis())
            .bind(day(at))
            .bind(e.event_type.as_str())
            .bind(e.visitor_id.as_str())
            .bind(e.route.as_str())
            .bind(sources.clone())
            .bind(e.metric.clone())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Deletes Cloud events of days before `events_before` and consent
    /// decisions of days before `consent_before` ('YYYY-MM-DD'); returns how
    /// many of each.
    pub(crate) async fn prune_cloud(
        &self,
        events_before: &str,
        consent_before: &str,
    ) -> Result<(u64, u64), StorageError> {
        on_pool!(&self.0.backend, pool => {
            let events = sqlx::query("DELETE FROM cloud_events WHERE day < $1")
                .bind(events_before)
                .execute(pool)
                .await?
                .rows_affected();
            let consent = sqlx::query("DELETE FROM consent_audit WHERE day < $1")
                .bind(consent_before)
                .execute(pool)
                .await?
                .rows_affected();
            Ok((events, consent))
        })
    }

    /// Cloud figures for the days `from..=to` ('YYYY-MM-DD'): counts by
    /// event type, page views by route, comparison sources, trend metrics,
    /// consent choices.
    pub(crate) async fn cloud_stats(
        &self,
        from: &str,
        to: &str,
    ) -> Result<BTreeMap<String, Vec<Count>>, StorageError> {
        let queries = [
            (
                "events",
                "SELECT event_type, COUNT(*) FROM cloud_events WHERE day >= $1 AND day <= $2 GROUP BY event_type ORDER BY 2 DESC, 1",
            ),
            (
                "page_views",
                "SELECT route, COUNT(*) FROM cloud_events WHERE day >= $1 AND day <= $2 AND event_type = 'page_view' GROUP BY route ORDER BY 2 DESC, 1 LIMIT 50",
            ),
            (
                "comparison_sources",
                "SELECT sources, COUNT(*) FROM cloud_events WHERE day >= $1 AND day <= $2 AND event_type = 'comparison_sources' GROUP BY sources ORDER BY 2 DESC, 1 LIMIT 50",
            ),
            (
                "trend_metrics",
                "SELECT metric, COUNT(*) FROM cloud_events WHERE day >= $1 AND day <= $2 AND event_type = 'trend_metric_selected' GROUP BY metric ORDER BY 2 DESC, 1 LIMIT 50",
            ),
            (
                "consent",
                "SELECT choice, COUNT(*) FROM consent_audit WHERE day >= $1 AND day <= $2 GROUP BY choice ORDER BY 1",
            ),
        ];
        self.read(move || async move {
            let mut out = BTreeMap::new();
            for (name, sql) in queries {
                let rows: Vec<(String, i64)> = on_pool!(self.reader(), pool => sqlx::query_as(sql).bind(from).bind(to).fetch_all(pool).await)?;
                out.insert(
                    name.to_string(),
                    rows.into_iter()
                        .map(|(key, count)| Count { key, count })
                        .collect(),
                );
            }
            Ok(out)
        })
        .await
    }

    /// The event types of the stored Cloud events, sorted (`test-support`
    /// feature: what the browser tests' clicks stored).
    #[cfg(feature = "test-support")]
    pub async fn cloud_event_types_for_tests(&self) -> Result<Vec<String>, StorageError> {
        Ok(
            on_pool!(&self.0.backend, pool => sqlx::query_scalar("SELECT event_type FROM cloud_events ORDER BY event_type").fetch_all(pool).await)?,
        )
    }
}
