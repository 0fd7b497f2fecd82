//! Finding the app folder and the project config.

use std::ffi::OsString;

use piperider_profile::{AppHome, ConfigStore};

#[test]
fn the_override_variable_wins_over_home() {
    let env = |var: &str| match var {
        "PIPERIDER_HOME" => Some(OsString::from("/opt/pr")),
        "HOME" => Some(OsString::from("/home/ada")),
        _ => None,
    };
    let home = AppHome::resolve_with("piperider", env).unwrap();
    assert_eq!(
        home.profile_path(),
        std::path::Path::new("/opt/pr/profile.yml")
    );

    let env = |var: &str| (var == "HOME").then(|| OsString::from("/home/ada"));
    let home = AppHome::resolve_with("piperider", env).unwrap();
    assert_eq!(home.dir(), std::path::Path::new("/home/ada/.piperider"));

    let home = AppHome::resolve_with("my-tool", |v: &str| {
        (v == "MY_TOOL_HOME").then(|| OsString::from("/x"))
    })
    .unwrap();
    assert_eq!(home.dir(), std::path::Path::new("/x"));
    assert_eq!(home.project_folder_name(), ".my-tool");

    assert!(AppHome::resolve_with("piperider", |_: &str| None).is_err());
}

#[test]
fn the_project_is_found_by_walking_up() {
    let root = tempfile::tempdir().unwrap();
    let project = root.path().join("work/shop");
    let deep = project.join("models/staging");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::create_dir_all(project.join(".piperider")).unwrap();
    std::fs::write(project.join(".piperider/config.yml"), "dataSources: []\n").unwrap();
    let home = AppHome::at("piperider", root.path().join("home/.piperider"));

    let store = ConfigStore::discover(&home, &deep).unwrap();
    assert_eq!(store.path(), project.join(".piperider/config.yml"));
    assert_eq!(store.project_dir().unwrap(), project);
    assert!(ConfigStore::discover(&home, &root.path().join("work")).is_none());
}

#[test]
fn the_user_folder_is_not_a_project() {
    let root = tempfile::tempdir().unwrap();
    let user_home = root.path().join("ada");
    std::fs::create_dir_all(user_home.join(".piperider")).unwrap();
    std::fs::write(user_home.join(".piperider/config.yml"), "dataSources: []\n").unwrap();
    std::fs::create_dir_all(user_home.join("scratch")).unwrap();
    let home = AppHome::at("piperider", user_home.join(".piperider"));
    assert!(
        home.find_project_config(&user_home.join("scratch"))
            .is_none()
    );
}
