//! Connecting to a data source and profiling its tables: row counts, and per
//! column its type, nulls, distinct values, and min and max where they make
//! sense. One driver-neutral pool serves SQLite and PostgreSQL.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::AnyPoolOptions;

use crate::datasource::DataSource;
use crate::project::Project;

/// Text columns with at most this many distinct values keep them (for `assert_column_in_set`).
const MAX_LISTED_VALUES: i64 = 10;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct TableProfile {
    pub(crate) name: String,
    pub(crate) row_count: u64,
    pub(crate) columns: Vec<ColumnProfile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ColumnProfile {
    pub(crate) name: String,
    /// The type as the database declares it.
    #[serde(rename = "type")]
    pub(crate) type_name: String,
    /// numeric, text, datetime, boolean or other.
    pub(crate) category: String,
    pub(crate) nulls: u64,
    pub(crate) distinct: Option<u64>,
    pub(crate) min: Option<String>,
    pub(crate) max: Option<String>,
    /// Every distinct value, for text columns with few of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) values: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

#[derive(Debug)]
pub(crate) struct Db {
    pool: AnyPool,
    kind: Kind,
}

pub(crate) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn category(type_name: &str) -> &'static str {
    let t = type_name.to_ascii_lowercase();
    let has = |s: &str| t.contains(s);
    if has("bool") {
        "boolean"
    } else if has("int")
        || has("real")
        || has("floa")
        || has("doub")
        || has("numeric")
        || has("decimal")
        || has("serial")
    {
        "numeric"
    } else if has("date") || has("time") {
        "datetime"
    } else if has("char") || has("text") || has("clob") || has("string") {
        "text"
    } else {
        "other"
    }
}

impl Db {
    pub(crate) async fn connect(project: &Project, source: &DataSource) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let (url, kind, shown) = match source {
            DataSource::Sqlite { dbpath, .. } => {
                let path = DataSource::sqlite_path(dbpath, &project.root);
                if !path.is_file() {
                    bail!(
                        "data source `{}`: SQLite database {} does not exist (dbpath in {})",
                        source.name(),
                        path.display(),
                        project.config_path.display()
                    );
                }
                let mut url = url::Url::parse("sqlite://").context("sqlite URL")?;
                url.set_path(&path.to_string_lossy());
                url.set_query(Some("mode=ro"));
                (url.to_string(), Kind::Sqlite, path.display().to_string())
            }
            DataSource::Postgres {
                host,
                port,
                user,
                dbname,
                ..
            } => {
                let mut url = url::Url::parse("postgres://localhost").context("postgres URL")?;
                url.set_host(Some(host))
                    .with_context(|| format!("host `{host}`"))?;
                let _ = url.set_port(Some(*port));
                if let Some(user) = user {
                    let _ = url.set_username(user);
                }
                if let Some(pw) = project.password(source)? {
                    let _ = url.set_password(Some(&pw));
                }
                url.set_path(dbname);
                let shown = format!("{host}:{port}/{dbname}");
                (url.to_string(), Kind::Postgres, shown)
            }
        };
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "data source `{}`: cannot connect to {shown}: {}",
                    source.name(),
                    scrub(&e.to_string())
                )
            })?;
        Ok(Db { pool, kind })
    }

    pub(crate) async fn tables(&self) -> anyhow::Result<Vec<String>> {
        let sql = match self.kind {
            Kind::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
            Kind::Postgres => {
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1"
            }
        };
        let rows = sqlx::query(sql)
            .fetch_all(&self.pool)
            .await
            .context("listing tables")?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).context("a table name"))
            .collect()
    }

    async fn columns(&self, table: &str) -> anyhow::Result<Vec<(String, String)>> {
        let sql = match self.kind {
            Kind::Sqlite => "SELECT name, type FROM pragma_table_info($1) ORDER BY cid",
            Kind::Postgres => {
                "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
            }
        };
        let rows = sqlx::query(sql)
            .bind(table)
            .fetch_all(&self.pool)
            .await
            .with_context(|| format!("listing the columns of {table}"))?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .context("a column")
    }

    /// Every figure of one table, in one scan (plus one small query per
    /// low-cardinality text column for its values).
    pub(crate) async fn profile(&self, table: &str) -> anyhow::Result<TableProfile> {
        let columns = self.columns(table).await?;
        let mut select = vec!["COUNT(*)".to_string()];
        for (name, type_name) in &columns {
            let c = quote(name);
            let cat = category(type_name);
            let comparable =
                matches!(cat, "numeric" | "text" | "datetime") || self.kind == Kind::Sqlite;
            let ordered = matches!(cat, "numeric" | "text" | "datetime")
                || (self.kind == Kind::Sqlite && cat != "boolean");
            select.push(format!("COUNT({c})"));
            select.push(if comparable || cat == "boolean" {
                format!("COUNT(DISTINCT {c})")
            } else {
                "NULL".into()
            });
            select.push(if ordered {
                format!("CAST(MIN({c}) AS TEXT)")
            } else {
                "NULL".into()
            });
            select.push(if ordered {
                format!("CAST(MAX({c}) AS TEXT)")
            } else {
                "NULL".into()
            });
        }
        let sql = format!("SELECT {} FROM {}", select.join(", "), quote(table));
        let row = sqlx::query(&sql)
            .fetch_one(&self.pool)
            .await
            .with_context(|| format!("profiling {table}"))?;
        let count =
            |i: usize| -> anyhow::Result<u64> { Ok(row.try_get::<i64, _>(i)?.max(0) as u64) };
        let row_count = count(0)?;
        let mut out = Vec::with_capacity(columns.len());
        for (i, (name, type_name)) in columns.into_iter().enumerate() {
            let base = 1 + i * 4;
            let non_null = count(base)?;
            let distinct = row
                .try_get::<Option<i64>, _>(base + 1)?
                .map(|d| d.max(0) as u64);
            let cat = category(&type_name);
            let values = match (cat, distinct) {
                ("text", Some(d)) if d > 0 && d as i64 <= MAX_LISTED_VALUES => {
                    Some(self.values(table, &name).await?)
                }
                _ => None,
            };
            out.push(ColumnProfile {
                category: cat.to_string(),
                type_name,
                nulls: row_count.saturating_sub(non_null),
                distinct,
                min: row.try_get::<Option<String>, _>(base + 2)?,
                max: row.try_get::<Option<String>, _>(base + 3)?,
                values,
                name,
            });
        }
        Ok(TableProfile {
            name: table.to_string(),
            row_count,
            columns: out,
        })
    }

    async fn values(&self, table: &str, column: &str) -> anyhow::Result<Vec<String>> {
        let c = quote(column);
        let sql = format!(
            "SELECT DISTINCT CAST({c} AS TEXT) FROM {} WHERE {c} IS NOT NULL ORDER BY 1 LIMIT {}",
            quote(table),
            MAX_LISTED_VALUES + 1
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>(0)?))
            .collect()
    }

    /// Rows whose value (as text) is outside `set`.
    pub(crate) async fn count_outside(
        &self,
        table: &str,
        column: &str,
        set: &[String],
    ) -> anyhow::Result<u64> {
        let c = quote(column);
        let placeholders: Vec<String> = (1..=set.len()).map(|i| format!("${i}")).collect();
        let condition = if set.is_empty() {
            String::new()
        } else {
            format!(
                " AND CAST({c} AS TEXT) NOT IN ({})",
                placeholders.join(", ")
            )
        };
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE {c} IS NOT NULL{condition}",
            quote(table)
        );
        let mut query = sqlx::query(&sql);
        for v in set {
            query = query.bind(v.clone());
        }
        let row = query.fetch_one(&self.pool).await?;
        Ok(row.try_get::<i64, _>(0)?.max(0) as u64)
    }

    /// Whether a custom assertion's query returns any row.
    pub(crate) async fn returns_rows(&self, sql: &str) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query(sql).fetch_optional(&self.pool).await?.is_some())
    }

    pub(crate) async fn close(self) {
        self.pool.close().await;
    }
}

/// Connection errors can echo a URL; keep any password out of messages.
fn scrub(message: &str) -> String {
    match (message.find("://"), message.find('@')) {
        (Some(start), Some(at)) if at > start => {
            let userinfo = &message[start + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &message[..start + 3], &message[at..]),
                None => message.to_string(),
            }
        }
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories() {
        for (t, c) in [
            ("INTEGER", "numeric"),
            ("double precision", "numeric"),
            ("NUMERIC(10,2)", "numeric"),
            ("character varying", "text"),
            ("TEXT", "text"),
            ("timestamp with time zone", "datetime"),
            ("DATE", "datetime"),
            ("boolean", "boolean"),
            ("jsonb", "other"),
            ("", "other"),
        ] {
            assert_eq!(category(t), c, "{t}");
        }
    }

    #[test]
    fn quoting_and_scrubbing() {
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(
            scrub("error with postgres://ada:hunter2@h/db"),
            "error with postgres://ada:***@h/db"
        );
    }
}
