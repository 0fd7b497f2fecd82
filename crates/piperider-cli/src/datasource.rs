//! Data sources: the URLs `init` takes, and the `dataSources` entries of
//! `.piperider/config.yml` (PipeRider's shape) that `run` connects to.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// One configured data source. Passwords never live here: they come from
/// `PGPASSWORD` or `.piperider/credentials.yml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataSource {
    Sqlite {
        name: String,
        dbpath: String,
    },
    Postgres {
        name: String,
        host: String,
        port: u16,
        user: Option<String>,
        dbname: String,
    },
}

impl DataSource {
    pub(crate) fn name(&self) -> &str {
        match self {
            DataSource::Sqlite { name, .. } | DataSource::Postgres { name, .. } => name,
        }
    }

    /// The type as telemetry reports it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            DataSource::Sqlite { .. } => "sqlite",
            DataSource::Postgres { .. } => "postgres",
        }
    }

    /// Reads a data source URL: `sqlite:///abs/path.db`, `sqlite://relative.db`,
    /// `postgres://user@host:5432/db`. A password in the URL is returned
    /// separately, to be kept out of `config.yml`.
    pub(crate) fn from_url(name: &str, url: &str) -> anyhow::Result<(DataSource, Option<String>)> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                bail!(
                    "`{url}`: a SQLite URL needs a file path, as in sqlite:///abs/path.db or sqlite://relative.db"
                );
            }
            return Ok((
                DataSource::Sqlite {
                    name: name.to_string(),
                    dbpath: path.to_string(),
                },
                None,
            ));
        }
        let parsed = url::Url::parse(url).with_context(|| {
            format!("`{url}` is not a data source URL (sqlite:///path.db or postgres://user@host:5432/db)")
        })?;
        match parsed.scheme() {
            "postgres" | "postgresql" => {}
            other => {
                bail!("`{other}` data sources are not supported: use sqlite:// or postgres://")
            }
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .with_context(|| format!("`{url}` names no host"))?
            .to_string();
        let dbname = parsed.path().trim_start_matches('/').to_string();
        if dbname.is_empty() {
            bail!("`{url}` names no database: add /dbname");
        }
        let user = (!parsed.username().is_empty()).then(|| decode(parsed.username()));
        let password = parsed.password().map(decode);
        Ok((
            DataSource::Postgres {
                name: name.to_string(),
                host,
                port: parsed.port().unwrap_or(5432),
                user,
                dbname,
            },
            password,
        ))
    }

    /// The entry as `config.yml` holds it.
    pub(crate) fn to_yaml(&self) -> serde_yaml::Value {
        let mut m = serde_yaml::Mapping::new();
        m.insert("name".into(), self.name().into());
        m.insert("type".into(), self.kind().into());
        match self {
            DataSource::Sqlite { dbpath, .. } => {
                m.insert("dbpath".into(), dbpath.as_str().into());
            }
            DataSource::Postgres {
                host,
                port,
                user,
                dbname,
                ..
            } => {
                m.insert("host".into(), host.as_str().into());
                m.insert("port".into(), u64::from(*port).into());
                if let Some(user) = user {
                    m.insert("user".into(), user.as_str().into());
                }
                m.insert("dbname".into(), dbname.as_str().into());
            }
        }
        serde_yaml::Value::Mapping(m)
    }

    /// An entry of `dataSources`, naming the config and field when it is wrong.
    pub(crate) fn from_yaml(
        config: &Path,
        index: usize,
        value: &serde_yaml::Value,
    ) -> anyhow::Result<DataSource> {
        let field = |key: &str| {
            value
                .get(key)
                .and_then(serde_yaml::Value::as_str)
                .map(str::to_string)
        };
        let at = |key: &str| format!("{}: dataSources[{index}].{key}", config.display());
        let name = field("name").with_context(|| format!("{} is missing", at("name")))?;
        match field("type").as_deref() {
            Some("sqlite") => Ok(DataSource::Sqlite {
                name,
                dbpath: field("dbpath").with_context(|| format!("{} is missing", at("dbpath")))?,
            }),
            Some("postgres" | "postgresql") => {
                let port = match value.get("port") {
                    None => 5432,
                    Some(v) => v
                        .as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        .with_context(|| format!("{} must be a port number", at("port")))?,
                };
                Ok(DataSource::Postgres {
                    name,
                    host: field("host").unwrap_or_else(|| "localhost".into()),
                    port,
                    user: field("user"),
                    dbname: field("dbname")
                        .with_context(|| format!("{} is missing", at("dbname")))?,
                })
            }
            Some(other) => bail!(
                "{}: `{other}` is not supported (sqlite, postgres)",
                at("type")
            ),
            None => bail!("{} is missing", at("type")),
        }
    }

    /// Where a SQLite file is, relative paths taken from the project folder.
    pub(crate) fn sqlite_path(dbpath: &str, project_dir: &Path) -> PathBuf {
        let path = Path::new(dbpath);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            project_dir.join(path)
        }
    }
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let (ds, pw) = DataSource::from_url("a", "sqlite:///abs/path.db").unwrap();
        assert_eq!(
            ds,
            DataSource::Sqlite {
                name: "a".into(),
                dbpath: "/abs/path.db".into()
            }
        );
        assert_eq!(pw, None);
        let (ds, _) = DataSource::from_url("a", "sqlite://relative.db").unwrap();
        assert_eq!(
            ds,
            DataSource::Sqlite {
                name: "a".into(),
                dbpath: "relative.db".into()
            }
        );
        let (ds, pw) =
            DataSource::from_url("w", "postgres://ada:s%40cret@db.internal:6543/shop").unwrap();
        assert_eq!(
            ds,
            DataSource::Postgres {
                name: "w".into(),
                host: "db.internal".into(),
                port: 6543,
                user: Some("ada".into()),
                dbname: "shop".into()
            }
        );
        assert_eq!(pw.as_deref(), Some("s@cret"));
        for bad in [
            "sqlite://",
            "mysql://h/db",
            "postgres://h",
            "nonsense",
            "postgres:///db",
        ] {
            assert!(DataSource::from_url("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn yaml_round_trip() {
        for url in [
            "sqlite://shop.db",
            "postgres://ada@h:5432/shop",
            "postgres://h/shop",
        ] {
            let (ds, _) = DataSource::from_url("n", url).unwrap();
            let back = DataSource::from_yaml(Path::new("c.yml"), 0, &ds.to_yaml()).unwrap();
            assert_eq!(back, ds);
        }
        let err = DataSource::from_yaml(
            Path::new("c.yml"),
            1,
            &serde_yaml::from_str("{name: x, type: oracle}").unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "c.yml: dataSources[1].type: `oracle` is not supported (sqlite, postgres)"
        );
    }
}
