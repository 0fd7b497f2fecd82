//! Reading, locking and atomically replacing one small file.
//!
//! The advisory lock is taken on the file itself, not on a sibling lock file,
//! so a project folder gets no stray `config.yml.lock`. Because a write
//! replaces the file by rename, a waiter may wake holding the lock of a file
//! that is no longer at the path; it then checks the path still names the
//! file it locked, and tries again if not.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use crate::ProfileError;

/// An exclusive advisory lock on the file at a path, held until dropped,
/// with the file's text read under the lock.
#[derive(Debug)]
pub(crate) struct Locked {
    file: File,
    pub(crate) text: String,
}

impl Locked {
    /// Permission bits of the locked file, so a rewrite keeps them.
    #[cfg(unix)]
    pub(crate) fn mode(&self) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        self.file
            .metadata()
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }

    #[cfg(not(unix))]
    pub(crate) fn mode(&self) -> Option<u32> {
        None
    }
}

/// Locks the file at `path` and reads it; `None` when there is no file.
pub(crate) fn lock(path: &Path) -> Result<Option<Locked>, ProfileError> {
    loop {
        let mut file = match OpenOptions::new().read(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ProfileError::io(path, e)),
        };
        file.lock().map_err(|e| ProfileError::io(path, e))?;
        match fs::metadata(path) {
            Ok(now)
                if same_file(
                    &now,
                    &file.metadata().map_err(|e| ProfileError::io(path, e))?,
                ) =>
            {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)
                    .map_err(|e| ProfileError::io(path, e))?;
                let text = utf8(path, bytes)?;
                return Ok(Some(Locked { file, text }));
            }
            Ok(_) => continue, // replaced while we waited: lock the new one
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ProfileError::io(path, e)),
        }
    }
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &fs::Metadata, _: &fs::Metadata) -> bool {
    true
}

/// The file's text, `None` when there is no file.
pub(crate) fn read(path: &Path) -> Result<Option<String>, ProfileError> {
    match fs::read(path) {
        Ok(bytes) => utf8(path, bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProfileError::io(path, e)),
    }
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, ProfileError> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        ProfileError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: "the file is not UTF-8 text".to_string(),
        }
    })
}

/// Writes `text` to a temporary file beside `path`, syncs it, and renames it
/// over `path` (replacing it) or, with `no_clobber`, links it into place only
/// if nothing is there yet. Returns false when `no_clobber` found a file.
pub(crate) fn write_atomic(
    path: &Path,
    text: &str,
    mode: Option<u32>,
    no_clobber: bool,
) -> Result<bool, ProfileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| ProfileError::io(dir, e))?;
    let io = |e| ProfileError::io(tmp_path_hint(path), e);
    tmp.write_all(text.as_bytes()).map_err(io)?;
    set_mode(tmp.as_file(), mode).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    if no_clobber {
        match tmp.persist_noclobber(path) {
            Ok(_) => {}
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(ProfileError::io(path, e.error)),
        }
    } else {
        tmp.persist(path)
            .map_err(|e| ProfileError::io(path, e.error))?;
    }
    sync_dir(dir);
    Ok(true)
}

fn tmp_path_hint(path: &Path) -> std::path::PathBuf {
    let mut hint = path.as_os_str().to_owned();
    hint.push(" (temporary copy)");
    hint.into()
}

#[cfg(unix)]
fn set_mode(file: &File, mode: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match mode {
        Some(mode) => file.set_permissions(fs::Permissions::from_mode(mode)),
        None => Ok(()),
    }
}

#[cfg(not(unix))]
fn set_mode(_: &File, _: Option<u32>) -> io::Result<()> {
    Ok(())
}

/// Makes the rename itself durable. Best effort: some filesystems refuse to
/// sync a directory, and the data is already safe in the file.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Applies `edits` to the file at `path` under its lock: reads it, refuses
/// (writing nothing) when it does not parse or an edit would disturb other
/// content, and replaces it atomically, keeping its permission bits.
pub(crate) fn edit(path: &Path, edits: &[crate::document::Edit<'_>]) -> Result<(), ProfileError> {
    edit_with(path, |_| Ok((edits.to_vec(), ())))
}

/// Like [`edit`], with the edits chosen from the document as it is under
/// the lock (so a read-then-write decision cannot race another process).
pub(crate) fn edit_with<'e, T>(
    path: &Path,
    choose: impl FnOnce(
        &crate::document::YamlText,
    ) -> Result<(Vec<crate::document::Edit<'e>>, T), ProfileError>,
) -> Result<T, ProfileError> {
    let locked = lock(path)?.ok_or_else(|| ProfileError::Missing {
        path: path.to_path_buf(),
    })?;
    let doc = crate::document::YamlText::parse(path, locked.text.clone())?;
    let (edits, chosen) = choose(&doc)?;
    let text = doc.edited(&edits)?;
    if text != locked.text {
        write_atomic(path, &text, locked.mode(), false)?;
    }
    drop(locked);
    Ok(chosen)
}
