//! Any bytes as `profile.yml`: reading never panics, and a file that cannot
//! be read is left exactly as it was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piperider_profile::ProfileStore;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("piperider-fuzz-profile-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("profile.yml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = ProfileStore::new(&path).load();
    assert_eq!(
        std::fs::read(&path).ok().as_deref(),
        Some(data),
        "reading changed the file"
    );
});
