//! The project a data command runs in: its folder, its config's data
//! sources, and the credentials kept beside the config.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use piperider_profile::AppHome;

use crate::datasource::DataSource;

#[derive(Debug)]
pub(crate) struct Project {
    /// The folder holding `.piperider/`.
    pub(crate) root: PathBuf,
    pub(crate) config_path: PathBuf,
    pub(crate) data_sources: Vec<DataSource>,
}

impl Project {
    /// The project containing the current folder.
    pub(crate) fn find() -> anyhow::Result<Project> {
        let cwd = std::env::current_dir().context("the current folder")?;
        let home = AppHome::resolve("piperider")
            .unwrap_or_else(|_| AppHome::at("piperider", "/nonexistent"));
        let Some(config_path) = home.find_project_config(&cwd) else {
            bail!(
                "not inside a PipeRider project (no .piperider/config.yml here or above): run `piperider init` first"
            );
        };
        Self::load(config_path)
    }

    pub(crate) fn load(config_path: PathBuf) -> anyhow::Result<Project> {
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let value: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| yaml_error(&config_path, &e))?;
        let data_sources = match value.get("dataSources") {
            None | Some(serde_yaml::Value::Null) => Vec::new(),
            Some(serde_yaml::Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| DataSource::from_yaml(&config_path, i, item))
                .collect::<anyhow::Result<_>>()?,
            Some(_) => bail!("{}: dataSources must be a list", config_path.display()),
        };
        let root = config_path
            .parent()
            .and_then(Path::parent)
            .context("the config is not inside a .piperider folder")?
            .to_path_buf();
        Ok(Project {
            root,
            config_path,
            data_sources,
        })
    }

    pub(crate) fn dir(&self) -> PathBuf {
        self.root.join(".piperider")
    }

    pub(crate) fn outputs(&self) -> PathBuf {
        self.dir().join("outputs")
    }

    pub(crate) fn assertions_dir(&self) -> PathBuf {
        self.dir().join("assertions")
    }

    /// The named data source, or the first one.
    pub(crate) fn data_source(&self, name: Option<&str>) -> anyhow::Result<&DataSource> {
        match name {
            Some(name) => self.data_sources.iter().find(|d| d.name() == name).with_context(|| {
                format!("{}: no data source named `{name}`", self.config_path.display())
            }),
            None => self.data_sources.first().with_context(|| {
                format!(
                    "{}: no data source configured; add one under dataSources (or run init with --datasource-url)",
                    self.config_path.display()
                )
            }),
        }
    }

    /// The password of a data source: `PGPASSWORD`, else `.piperider/credentials.yml`.
    pub(crate) fn password(&self, source: &DataSource) -> anyhow::Result<Option<String>> {
        if let Ok(pw) = std::env::var("PGPASSWORD") {
            return Ok(Some(pw));
        }
        let path = self.dir().join("credentials.yml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let value: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| yaml_error(&path, &e))?;
        Ok(value
            .get(source.name())
            .and_then(|s| s.get("password"))
            .and_then(serde_yaml::Value::as_str)
            .map(str::to_string))
    }
}

/// A YAML error naming the file, line and column.
pub(crate) fn yaml_error(path: &Path, err: &serde_yaml::Error) -> anyhow::Error {
    match err.location() {
        Some(loc) => {
            let message = err.to_string();
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let message = message.replacen(&suffix, "", 1);
            anyhow::anyhow!(
                "{}:{}:{}: {message}",
                path.display(),
                loc.line(),
                loc.column()
            )
        }
        None => anyhow::anyhow!("{}: {err}", path.display()),
    }
}
