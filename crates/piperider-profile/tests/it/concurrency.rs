//! Many writers at once: every edit lands, and the file stays valid.

use std::process::{Command, Stdio};

use piperider_profile::ProfileStore;

use crate::{fixture, temp_file};

const WRITERS: usize = 20;
const CHILD_ENV: &str = "PIPERIDER_PROFILE_TEST_CHILD";

fn assert_all_edits_applied(path: &std::path::Path) {
    let store = ProfileStore::new(path);
    let profile = store.load().unwrap().expect("the profile is still there");
    assert_eq!(profile.user_id.as_str(), "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b");
    let value: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for i in 0..WRITERS {
        assert_eq!(
            value[format!("writer_{i}").as_str()],
            format!("done-{i}"),
            "edit {i} was lost"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "profile.yml")
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn twenty_threads_editing_one_profile() {
    let (_dir, path) = temp_file("profile.yml", &fixture("piperider-profile.yml"));
    std::thread::scope(|s| {
        for i in 0..WRITERS {
            let path = path.clone();
            s.spawn(move || {
                let store = ProfileStore::new(&path);
                store
                    .set_value(&format!("writer_{i}"), &format!("done-{i}"))
                    .unwrap();
                store.set_tracking(i % 2 == 0).unwrap();
            });
        }
    });
    assert_all_edits_applied(&path);
}

#[test]
fn twenty_processes_editing_one_profile() {
    let (_dir, path) = temp_file("profile.yml", &fixture("piperider-profile.yml"));
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..WRITERS)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "concurrency::child_process_edit",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, format!("{}|{i}", path.display()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a writer process failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_all_edits_applied(&path);
}

/// The body of each writer process of `twenty_processes_editing_one_profile`,
/// which runs this test binary again with the profile path in the environment.
#[test]
fn child_process_edit() {
    let Ok(job) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (path, i) = job.rsplit_once('|').unwrap();
    let store = ProfileStore::new(path);
    store
        .set_value(&format!("writer_{i}"), &format!("done-{i}"))
        .unwrap();
    store
        .set_tracking(i.parse::<usize>().unwrap() % 2 == 0)
        .unwrap();
}
