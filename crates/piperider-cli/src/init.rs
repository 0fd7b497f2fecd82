//! `piperider init`: a new project in the current folder.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, bail};
use piperider_event::ProjectId;
use piperider_profile::{AppHome, ConfigStore};

use crate::datasource::DataSource;
use crate::{Finished, out};

#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// Name of the data source (asked on a terminal; `default` otherwise).
    #[arg(long)]
    name: Option<String>,
    /// sqlite:///abs/path.db, sqlite://relative.db or postgres://user@host:5432/db
    #[arg(long)]
    datasource_url: Option<String>,
}

pub(crate) fn run(args: &InitArgs) -> anyhow::Result<Finished> {
    let cwd = std::env::current_dir().context("the current folder")?;
    let home = AppHome::resolve("piperider").ok();
    if let Some(existing) = home.as_ref().and_then(|h| h.find_project_config(&cwd)) {
        bail!(
            "{} already exists, so this folder is already in a project; edit that file to add a data source, or delete it to start over",
            existing.display()
        );
    }
    let interactive = std::io::stdin().is_terminal() && args.datasource_url.is_none();
    let name = match (&args.name, interactive) {
        (Some(name), _) => name.clone(),
        (None, true) => ask("Data source name", "default")?,
        (None, false) => "default".to_string(),
    };
    let url = match (&args.datasource_url, interactive) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => Some(ask(
            "Data source URL (sqlite:///path/to.db or postgres://user@host:5432/db)",
            "",
        )?)
        .filter(|u| !u.is_empty()),
        (None, false) => None,
    };
    let source = url
        .as_deref()
        .map(|u| DataSource::from_url(&name, u))
        .transpose()?;

    let folder = cwd.join(".piperider");
    let store = ConfigStore::new(folder.join("config.yml"));
    let text = config_text(source.as_ref().map(|(s, _)| s), &ProjectId::random());
    if !store.create(&text)? {
        bail!(
            "{} appeared while init ran; nothing was changed",
            store.path().display()
        );
    }
    std::fs::create_dir_all(folder.join("assertions")).context("creating .piperider/assertions")?;
    write_if_missing(&folder.join(".gitignore"), "outputs/\ncredentials.yml\n")?;
    if let Some((source, Some(password))) = &source {
        write_credentials(&folder.join("credentials.yml"), source.name(), password)?;
        out::println(
            "The password from the URL went to .piperider/credentials.yml (git-ignored), not config.yml.",
        );
    }
    out::println(&format!("Created {}", store.path().display()));
    if source.is_none() {
        out::println(
            "No data source yet: add one under dataSources, or run init again elsewhere with --datasource-url.",
        );
    }
    Ok(Finished::ok(
        None,
        source.map(|(s, _)| s.kind().to_string()),
    ))
}

fn config_text(source: Option<&DataSource>, id: &ProjectId) -> String {
    let sources = match source {
        Some(s) => {
            let mut m = serde_yaml::Mapping::new();
            m.insert(
                "dataSources".into(),
                serde_yaml::Value::Sequence(vec![s.to_yaml()]),
            );
            serde_yaml::to_string(&m).unwrap_or_default()
        }
        None => "dataSources: []\n".to_string(),
    };
    format!(
        "# PipeRider project. Passwords belong in PGPASSWORD or .piperider/credentials.yml, never here.\n\
         {sources}\n\
         telemetry:\n  \
         # Links this project's usage statistics to your profile. Delete the id to opt this project out.\n  \
         id: {id}\n"
    )
}

fn write_if_missing(path: &Path, text: &str) -> anyhow::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut f) => f
            .write_all(text.as_bytes())
            .with_context(|| path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

fn write_credentials(path: &Path, name: &str, password: &str) -> anyhow::Result<()> {
    let mut inner = serde_yaml::Mapping::new();
    inner.insert("password".into(), password.into());
    let mut m = serde_yaml::Mapping::new();
    m.insert(name.into(), serde_yaml::Value::Mapping(inner));
    let text = serde_yaml::to_string(&m)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| path.display().to_string())?;
    file.write_all(text.as_bytes())
        .with_context(|| path.display().to_string())
}

fn ask(question: &str, default: &str) -> anyhow::Result<String> {
    let mut stderr = std::io::stderr().lock();
    if default.is_empty() {
        write!(stderr, "{question}: ")?;
    } else {
        write!(stderr, "{question} [{default}]: ")?;
    }
    stderr.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let answer = line.trim();
    Ok(if answer.is_empty() {
        default.to_string()
    } else {
        answer.to_string()
    })
}
