//! Property tests: reading never panics, and edits either keep every other
//! key exactly or refuse and write nothing.

use piperider_profile::ProfileStore;
use proptest::prelude::*;

use crate::temp_file;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)))]

    #[test]
    fn reading_arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let (_dir, path) = temp_file("profile.yml", &text);
        let _ = ProfileStore::new(&path).load();
    }

    #[test]
    fn an_edit_keeps_the_other_keys(
        keys in proptest::collection::btree_map("[a-z][a-z_]{0,8}", "[a-zA-Z0-9 ]{0,12}", 0..6),
        comment in "[a-zA-Z ]{0,20}",
        value in "[ -~]{0,16}",
    ) {
        let mut text = format!("# {comment}\nuser_id: 5f8c0a9e2b7d4e1fa3c6b9d2e4f7a1c3\n");
        for (k, v) in &keys {
            text.push_str(&format!("x_{k}: '{v}'\n"));
        }
        let (_dir, path) = temp_file("profile.yml", &text);
        let store = ProfileStore::new(&path);
        match store.set_value("edited", &value) {
            Ok(()) => {
                let after: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                prop_assert_eq!(&after["edited"], &serde_yaml::Value::from(value.clone()));
                for (k, v) in &keys {
                    prop_assert_eq!(&after[format!("x_{k}").as_str()], &serde_yaml::Value::from(v.clone()));
                }
                let written = std::fs::read_to_string(&path).unwrap();
                prop_assert!(written.starts_with(&text), "the old lines changed:\n{}", written);
            }
            Err(_) => prop_assert_eq!(std::fs::read_to_string(&path).unwrap(), text),
        }
    }
}
