//! The collector's own files, kept private and never followed elsewhere:
//! folders 0700 and owned by the user (an existing one is tightened; one
//! owned by someone else, or a link, is refused with a message), files
//! created 0600, every open done without following a symbolic link and
//! only of a regular file, every read capped. A link planted in the spool
//! can then neither make the sender read and post a file only its victim
//! can read, nor make a write land outside the folder.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// Why a folder or file is not used.
fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{}: {why}; telemetry does not use it", path.display()),
    )
}

/// Creates `dir` (and its parents) 0700 if missing; refuses a link or a
/// folder of another user; tightens one of the user's to 0700.
#[cfg(unix)]
pub(crate) fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let meta = fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        return Err(refused(dir, "not a folder of its own (a link, or a file)"));
    }
    let me = rustix::process::getuid().as_raw();
    if meta.uid() != me {
        return Err(refused(
            dir,
            &format!("owned by another user (uid {}, not {me})", meta.uid()),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// `options` for a private file: created 0600, never through a link.
#[cfg(unix)]
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    options
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
}

#[cfg(not(unix))]
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    options
}

/// Opens `path` with `options` made private; refuses anything but a
/// regular file (a link fails to open at all).
pub(crate) fn open(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let file = private(options).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(refused(path, "not a regular file"));
    }
    Ok(file)
}

/// The bytes of the regular file at `path`, refused when over `cap`.
pub(crate) fn read(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let file = open(path, OpenOptions::new().read(true))?;
    let mut out = Vec::new();
    file.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(refused(path, &format!("larger than {cap} bytes")));
    }
    Ok(out)
}

/// Writes `bytes` to `path` at once: a new private file beside it, then a
/// rename (which replaces a link, never writes through it).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = open(&tmp, OpenOptions::new().write(true).create_new(true))?;
    let written = file.write_all(bytes).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn links_are_not_followed_and_folders_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, b"only mine").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert!(read(&link, 1024).is_err(), "read through a link");
        assert!(open(&link, OpenOptions::new().append(true)).is_err());
        // A write lands beside the link, not through it.
        write_atomic(&link, b"new").unwrap();
        assert_eq!(fs::read(&secret).unwrap(), b"only mine");
        // Reads are capped.
        let big = dir.path().join("big");
        fs::write(&big, vec![b'x'; 100]).unwrap();
        assert!(read(&big, 99).is_err());
        assert_eq!(read(&big, 100).unwrap().len(), 100);
        // Folders: created 0700, an open one tightened, a link refused.
        let made = dir.path().join("a/b");
        ensure_private_dir(&made).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&made), 0o700);
        fs::set_permissions(&made, fs::Permissions::from_mode(0o777)).unwrap();
        ensure_private_dir(&made).unwrap();
        assert_eq!(mode(&made), 0o700);
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&made, &linked).unwrap();
        let err = ensure_private_dir(&linked).unwrap_err();
        assert!(
            err.to_string().contains("telemetry does not use it"),
            "{err}"
        );
    }
}
