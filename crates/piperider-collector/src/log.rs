//! Small bounded log files: telemetry errors are written here and swallowed,
//! never shown to the host command's user unless debug mode is on.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Largest size of a log file; past it the older half is dropped.
const MAX_LOG_BYTES: u64 = 64 * 1024;

/// Appends one time-stamped line. Best effort: a log that cannot be written is skipped.
pub(crate) fn append(path: &Path, message: &str) {
    let line = format!(
        "{} {}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        message.replace('\n', " ")
    );
    if let Some(dir) = path.parent()
        && crate::files::ensure_private_dir(dir).is_err()
    {
        return;
    }
    let options = || {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(true).truncate(false);
        o
    };
    let Ok(mut file) = crate::files::open(path, &mut options()) else {
        return;
    };
    if file.metadata().is_ok_and(|m| m.len() > MAX_LOG_BYTES) {
        let mut text = String::new();
        if file.read_to_string(&mut text).is_ok() {
            let half = text.len() / 2;
            let cut = text[half..].find('\n').map_or(text.len(), |i| half + i + 1);
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = file.write_all(&text.as_bytes()[cut..]);
        }
    }
    let _ = file.seek(SeekFrom::End(0));
    let _ = file.write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_log_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        for i in 0..5_000 {
            super::append(
                &path,
                &format!("line {i} with some padding to fill the file"),
            );
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len <= super::MAX_LOG_BYTES + 200, "{len}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("line 4999 with some padding to fill the file\n"));
        assert!(
            text.lines().all(|l| l.contains(" line ")),
            "every line is whole"
        );
    }
}
