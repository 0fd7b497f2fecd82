//! What every request handler shares: the configuration, the store, the
//! GeoIP reader, the rate limits, the metrics, the consent cookie's codec
//! and policy, and the dashboard's sessions.

use std::sync::Arc;

use crate::config::Config;
use crate::edge::{Failures, Limits, Sessions};
use crate::geo::Geo;
use crate::metrics::Metrics;
use crate::storage::{StorageError, Store};

/// Everything a request handler needs. Every request clones it (once per
/// extractor), so its clones share one allocation.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares among its clones.
#[derive(Debug)]
pub struct Shared {
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) geo: Geo,
    pub(crate) limits: Limits,
    pub(crate) metrics: Metrics,
    /// Signs and checks Cloud consent cookies (its secret lives in the
    /// database; a node in queue mode that starts while the database is
    /// away reads it when first needed).
    consent_codec: tokio::sync::OnceCell<piperider_consent::CookieCodec>,
    pub(crate) consent_policy: piperider_consent::Policy,
    /// Logged-in dashboard sessions.
    pub(crate) admin_sessions: Sessions,
    /// Failed admin logins and bearer attempts per address.
    pub(crate) admin_failures: Failures,
    /// The public summary's answers computed lately.
    pub(crate) public_cache: crate::public::PublicCache,
}

/// The consent cookies' codec, with the secret the database keeps (made
/// the first time).
async fn consent_codec(store: &Store) -> Result<piperider_consent::CookieCodec, StorageError> {
    let secret = store
        .setting("consent_cookie_secret", || {
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
        })
        .await?;
    Ok(piperider_consent::CookieCodec::new(secret.as_bytes()))
}

impl AppState {
    /// The state of a service on `store` (whose writers it shares with
    /// every other user of the store): reads (or makes) the consent
    /// cookie's secret.
    pub async fn new(config: Config, store: Store, geo: Geo) -> Result<AppState, StorageError> {
        if let Some(url) = &config.read_database_url {
            store.use_replica(url)?;
        }
        let consent_codec = match consent_codec(&store).await {
            Ok(codec) => tokio::sync::OnceCell::new_with(Some(codec)),
            // Events go to the queue: the node serves them meanwhile.
            Err(e) if store.is_queue_node() => {
                tracing::warn!(error = %e, "the database is not reachable; starting without it");
                tokio::sync::OnceCell::new()
            }
            Err(e) => return Err(e),
        };
        Ok(AppState(Arc::new(Shared {
            metrics: Metrics::new(store.commit_metrics()),
            admin_sessions: Sessions::default(),
            admin_failures: Failures::default(),
            public_cache: Default::default(),
            consent_codec,
            consent_policy: piperider_consent::Policy::new(config.consent_policy_version),
            limits: Limits::new(&config),
            config,
            store,
            geo,
        })))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration this state runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A consent cookie value this server would have set for `record`
    /// (`test-support` feature: browser tests start from a given consent).
    #[cfg(feature = "test-support")]
    pub fn consent_cookie_for_tests(&self, record: &piperider_consent::ConsentRecord) -> String {
        self.consent_codec
            .get()
            .expect("the consent secret was read at start")
            .encode(record)
    }

    /// The consent cookies' codec, its secret read from the database if
    /// it was not at start.
    pub(crate) async fn consent_codec(
        &self,
    ) -> Result<&piperider_consent::CookieCodec, StorageError> {
        self.consent_codec
            .get_or_try_init(|| consent_codec(&self.store))
            .await
    }
}
