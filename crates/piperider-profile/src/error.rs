//! What can go wrong reading or editing the profile and config files.

use std::path::PathBuf;

/// Every error names the file; syntax and field errors also name the line and column.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The file is not valid YAML.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where the parser stopped, from 1.
        line: usize,
        /// Where the parser stopped, from 1.
        column: usize,
        /// The parser's own words.
        message: String,
    },
    /// The file is valid YAML but a field is missing or has a value that cannot be used.
    #[error("{}{}: `{field}` {reason}", path.display(), location_suffix(*line, *column))]
    Field {
        /// The file.
        path: PathBuf,
        /// The key's path (`telemetry.id`).
        field: String,
        /// The value's line, when the field is there at all.
        line: Option<usize>,
        /// The value's column, when the field is there at all.
        column: Option<usize>,
        /// What the value should be (`must be true or false`).
        reason: String,
    },
    /// The file or its folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// An edit could not be made without touching other content; nothing was written.
    #[error("{}: could not change `{field}` without altering the rest of the file; the file was left unchanged", path.display())]
    Edit {
        /// The file, which is unchanged.
        path: PathBuf,
        /// The key that was to be changed.
        field: String,
    },
    /// There is no home folder to hold the profile.
    #[error("cannot find the home folder: set {var} or HOME")]
    NoHome {
        /// The app's override variable (`PIPERIDER_HOME`).
        var: String,
    },
    /// The file should exist but does not.
    #[error("{}: no such file", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
}

fn location_suffix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

impl ProfileError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ProfileError::Io {
            path: path.into(),
            source,
        }
    }

    /// The file the error is about, when there is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            ProfileError::Syntax { path, .. }
            | ProfileError::Field { path, .. }
            | ProfileError::Io { path, .. }
            | ProfileError::Edit { path, .. }
            | ProfileError::Missing { path } => Some(path),
            ProfileError::NoHome { .. } => None,
        }
    }
}
