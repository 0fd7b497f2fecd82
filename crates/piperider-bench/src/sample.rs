//! The sample data source: `sample/shop.sql` (in this crate) loaded into a SQLite file.

use std::path::Path;

use crate::Result;

const SHOP_SQL: &str = include_str!("../sample/shop.sql");

/// Creates the sample SQLite database at `path` unless it exists.
pub(crate) fn shop_db(path: &Path) -> Result {
    if path.exists() {
        return Ok(());
    }
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("async runtime: {e}"))?;
    runtime.block_on(async {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&url)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        sqlx::raw_sql(SHOP_SQL)
            .execute(&mut conn)
            .await
            .map_err(|e| format!("loading the sample data: {e}"))?;
        conn.close().await.map_err(|e| e.to_string())
    })
}
