//! Small bounded log files: telemetry errors are written here and swallowed,
//! never shown to the host command's user unless debug mode is on.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Largest size of a log file; past it the older half is dropped.
const MAX_LOG_BYTES: u64 = 64 * 1024;

/// Whether a line (its first 20 bytes, an RFC 3339 time to the second)
/// was written more than four weeks ago.
fn is_stale(line: &[u8]) -> bool {
    let Some(stamp) = line.get(..20).and_then(|b| std::str::from_utf8(b).ok()) else {
        return false;
    };
    chrono::DateTime::parse_from_rfc3339(stamp).is_ok_and(|t| {
        chrono::Utc::now().signed_duration_since(t)
            > chrono::TimeDelta::from_std(crate::record::LOCAL_KEPT_FOR).unwrap_or_default()
    })
}

/// Removes the log at `path` if it was not written for four weeks.
pub(crate) fn remove_if_stale(path: &Path) {
    let untouched = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > crate::record::LOCAL_KEPT_FOR);
    if untouched {
        let _ = std::fs::remove_file(path);
    }
}

/// Appends one time-stamped line; lines older than four weeks are dropped. Best effort: a log that cannot be written is skipped.
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
    let mut first = [0u8; 20];
    let stale = file.read_exact(&mut first).is_ok() && is_stale(&first);
    if stale || file.metadata().is_ok_and(|m| m.len() > MAX_LOG_BYTES) {
        let mut text = String::new();
        if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
            let half = if stale { 0 } else { text.len() / 2 };
            let mut cut = text[half..].find('\n').map_or(text.len(), |i| half + i + 1);
            // Lines older than four weeks go too.
            while cut < text.len() && is_stale(&text.as_bytes()[cut..]) {
                cut = text[cut..].find('\n').map_or(text.len(), |i| cut + i + 1);
            }
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

    #[test]
    fn lines_older_than_four_weeks_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let old = (chrono::Utc::now() - chrono::TimeDelta::days(29))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let recent = (chrono::Utc::now() - chrono::TimeDelta::days(27))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        std::fs::write(
            &path,
            format!("{old} old one\n{old} old two\n{recent} recent\n"),
        )
        .unwrap();
        super::append(&path, "new");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with(" recent") && lines[1].ends_with(" new"),
            "{text}"
        );
    }
}
