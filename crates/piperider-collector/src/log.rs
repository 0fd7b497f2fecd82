//! Small bounded log files: telemetry errors are written here and swallowed,
//! never shown to the host command's user unless debug mode is on.

use std::fs::{self, OpenOptions};
use std::io::Write;
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
    if let Some(dir) = path.parent() {
        let _ = crate::spool::create_private_dir(dir);
    }
    if fs::metadata(path).is_ok_and(|m| m.len() > MAX_LOG_BYTES)
        && let Ok(text) = fs::read_to_string(path)
    {
        let half = text.len() / 2;
        let cut = text[half..].find('\n').map_or(text.len(), |i| half + i + 1);
        let _ = fs::write(path, &text[cut..]);
    }
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = file.write_all(line.as_bytes());
    }
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
