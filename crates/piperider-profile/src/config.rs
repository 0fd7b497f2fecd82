//! The project config, `.piperider/config.yml`. This crate reads and edits
//! only what telemetry needs (`telemetry.id`, the data source types) and
//! leaves the rest of the file to the commands that own it.

use std::path::{Path, PathBuf};

use piperider_event::ProjectId;
use serde_yaml::Value;

use crate::document::{Edit, Scalar, YamlText};
use crate::profile::parse_hex_id;
use crate::{AppHome, ProfileError, file};

const TELEMETRY_ID: &[&str] = &["telemetry", "id"];

/// What telemetry reads from a project config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectConfig {
    /// `telemetry.id`; `None` opts the project out of telemetry.
    pub telemetry_id: Option<ProjectId>,
    /// The entries of `dataSources`.
    pub data_sources: Vec<DataSourceSummary>,
}

/// One entry of `dataSources`: its name and type (`sqlite`, `postgres`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSourceSummary {
    /// The entry's `name`, when it has one.
    pub name: Option<String>,
    /// The entry's `type`: the data source type events carry.
    pub kind: Option<String>,
}

/// The config file of one project.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    path: PathBuf,
}

impl ConfigStore {
    /// The config file at `path` (`<project>/.piperider/config.yml`); nothing is read yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ConfigStore { path: path.into() }
    }

    /// The config of the project that contains `start`, if any.
    pub fn discover(home: &AppHome, start: &Path) -> Option<Self> {
        home.find_project_config(start).map(Self::new)
    }

    /// The file this store reads and edits.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The project's root folder: the one holding `.piperider/`.
    pub fn project_dir(&self) -> Option<&Path> {
        self.path.parent()?.parent()
    }

    /// The telemetry id and data sources. A missing file is
    /// [`ProfileError::Missing`]; a malformed one names the line.
    pub fn load(&self) -> Result<ProjectConfig, ProfileError> {
        let text = file::read(&self.path)?.ok_or_else(|| ProfileError::Missing {
            path: self.path.clone(),
        })?;
        parse(&YamlText::parse(&self.path, text)?)
    }

    /// Writes a new config, refusing to replace one that exists (returns
    /// false then). `text` must parse; it is written as given.
    pub fn create(&self, text: &str) -> Result<bool, ProfileError> {
        YamlText::parse(&self.path, text.to_string())?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ProfileError::io(dir, e))?;
        }
        file::write_atomic(&self.path, text, Some(0o644), true)
    }

    /// Sets `telemetry.id`, leaving every other byte as it was.
    pub fn set_telemetry_id(&self, id: &ProjectId) -> Result<(), ProfileError> {
        file::edit(
            &self.path,
            &[Edit::Set(TELEMETRY_ID, Scalar::Str(id.to_string()))],
        )
    }

    /// Removes `telemetry.id` (its line only), opting the project out.
    pub fn remove_telemetry_id(&self) -> Result<(), ProfileError> {
        file::edit(&self.path, &[Edit::Remove(TELEMETRY_ID)])
    }
}

fn parse(doc: &YamlText) -> Result<ProjectConfig, ProfileError> {
    let telemetry_id = match doc.get(TELEMETRY_ID) {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            parse_hex_id(value)
                .ok_or_else(|| doc.field_error(TELEMETRY_ID, "must be 32 hex digits (a UUID)"))?
                .into(),
        ),
    };
    let data_sources = match doc.get(&["dataSources"]) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| DataSourceSummary {
                name: item.get("name").and_then(Value::as_str).map(str::to_string),
                kind: item.get("type").and_then(Value::as_str).map(str::to_string),
            })
            .collect(),
        Some(_) => return Err(doc.field_error(&["dataSources"], "must be a list")),
    };
    Ok(ProjectConfig {
        telemetry_id,
        data_sources,
    })
}
