//! Where an app keeps its user files, and how a project is found.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::ProfileError;

/// The user folder of one app (`~/.piperider` for PipeRider). The app name
/// decides the folder, the override variable (`PIPERIDER_HOME`) and the
/// project folder (`.piperider`), so other CLIs can reuse this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppHome {
    app: String,
    dir: PathBuf,
}

impl AppHome {
    /// The folder named by `{APP}_HOME`, else `.{app}` in the user's home folder.
    pub fn resolve(app: &str) -> Result<Self, ProfileError> {
        Self::resolve_with(app, |var| std::env::var_os(var))
    }

    /// [`AppHome::resolve`] with the environment given as a function.
    pub fn resolve_with(
        app: &str,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self, ProfileError> {
        let var = Self::override_var(app);
        if let Some(dir) = env(&var).filter(|v| !v.is_empty()) {
            return Ok(Self::at(app, PathBuf::from(dir)));
        }
        let home = env("HOME")
            .or_else(|| env("USERPROFILE"))
            .filter(|v| !v.is_empty())
            .ok_or(ProfileError::NoHome { var })?;
        Ok(Self::at(app, PathBuf::from(home).join(format!(".{app}"))))
    }

    /// An app folder at a known place.
    pub fn at(app: &str, dir: impl Into<PathBuf>) -> Self {
        AppHome {
            app: app.to_string(),
            dir: dir.into(),
        }
    }

    /// The variable that overrides the folder: `PIPERIDER_HOME` for `piperider`.
    pub fn override_var(app: &str) -> String {
        format!("{}_HOME", app.to_ascii_uppercase().replace('-', "_"))
    }

    /// The app's name (`piperider`), which names its folders and variables.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The app folder (`~/.piperider`, or the override variable's value).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `profile.yml` in the app folder.
    pub fn profile_path(&self) -> PathBuf {
        self.dir.join("profile.yml")
    }

    /// The folder a project keeps its config in: `.piperider`.
    pub fn project_folder_name(&self) -> String {
        format!(".{}", self.app)
    }

    /// The nearest `.piperider/config.yml` at or above `start`, as git finds
    /// `.git`. The user folder itself (`~/.piperider`) is never taken for a project.
    pub fn find_project_config(&self, start: &Path) -> Option<PathBuf> {
        let folder = self.project_folder_name();
        start.ancestors().find_map(|dir| {
            let project = dir.join(&folder);
            let config = project.join("config.yml");
            (config.is_file() && !same_dir(&project, &self.dir)).then_some(config)
        })
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
