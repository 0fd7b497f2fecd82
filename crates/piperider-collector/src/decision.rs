//! The enablement rules. First match wins; `telemetry status` names the rule.

use std::path::{Path, PathBuf};

use piperider_event::ProjectId;
use piperider_profile::{AppHome, ConfigStore, Profile, ProfileStore, TelemetryMode};

use crate::{AppInfo, Env};

/// Why telemetry is on or off, in rule order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `DO_NOT_TRACK` is set (to anything but empty, `0` or `false`).
    DoNotTrack,
    /// `PIPERIDER_TELEMETRY_DISABLED` is set.
    DisabledByEnv,
    /// `PIPERIDER_TELEMETRY=off`.
    OffByEnv,
    /// `PIPERIDER_TELEMETRY` is set to something other than `on`, `local`
    /// or `off`: off, since what was meant cannot be known.
    ModeVarUnknown,
    /// There is no home folder to keep a profile in.
    NoHome,
    /// The profile cannot be read; telemetry stays off until it is fixed.
    ProfileUnreadable,
    /// The profile says `anonymous_tracking: false`.
    ProfileOptOut,
    /// The project's config cannot be read.
    ProjectConfigUnreadable,
    /// The project's config has no `telemetry.id`.
    ProjectOptOut,
    /// No profile yet: the next command creates it, shows the notice and records nothing.
    FirstRun,
    /// No backend to send to (no endpoint variable and no built-in default).
    NoEndpoint,
    /// The endpoint is `http://` to another machine: the user id would
    /// travel in clear text. Only `https://`, or `http://` on loopback.
    InsecureEndpoint,
    /// Local mode: events are kept on this machine and never sent.
    Local,
    /// On, in CI: pseudonymous ids per CI vendor and project.
    Ci,
    /// On.
    Enabled,
}

impl Reason {
    /// The rule's name as `status --json` reports it.
    pub fn as_str(self, app: &AppInfo) -> String {
        match self {
            Reason::DoNotTrack => "DO_NOT_TRACK".into(),
            Reason::DisabledByEnv => app.disabled_var(),
            Reason::OffByEnv => format!("{}=off", app.mode_var()),
            Reason::ModeVarUnknown => format!("{}_unknown", app.mode_var()),
            Reason::NoHome => "no_home".into(),
            Reason::ProfileUnreadable => "profile_unreadable".into(),
            Reason::ProfileOptOut => "profile_opt_out".into(),
            Reason::ProjectConfigUnreadable => "project_config_unreadable".into(),
            Reason::ProjectOptOut => "project_opt_out".into(),
            Reason::FirstRun => "first_run".into(),
            Reason::NoEndpoint => "no_endpoint".into(),
            Reason::InsecureEndpoint => "insecure_endpoint".into(),
            Reason::Local => "local".into(),
            Reason::Ci => "ci".into(),
            Reason::Enabled => "enabled".into(),
        }
    }

    /// One sentence for people.
    pub fn explain(self, app: &AppInfo) -> String {
        match self {
            Reason::DoNotTrack => "disabled because DO_NOT_TRACK is set".into(),
            Reason::DisabledByEnv => format!("disabled because {} is set", app.disabled_var()),
            Reason::OffByEnv => format!("off because {}=off", app.mode_var()),
            Reason::ModeVarUnknown => format!(
                "off because {} is neither on, local nor off",
                app.mode_var()
            ),
            Reason::NoHome => "disabled: no home folder to keep the profile in".into(),
            Reason::ProfileUnreadable => "disabled: the profile cannot be read (fix or delete it)".into(),
            Reason::ProfileOptOut => "disabled by anonymous_tracking: false in the profile".into(),
            Reason::ProjectConfigUnreadable => "disabled in this project: its config cannot be read".into(),
            Reason::ProjectOptOut => "disabled in this project: its config has no telemetry.id".into(),
            Reason::FirstRun => "off until the notice is shown: the next command creates the profile, prints the notice and records nothing".into(),
            Reason::NoEndpoint => format!("disabled: no endpoint (set {})", app.endpoint_var()),
            Reason::InsecureEndpoint => format!(
                "disabled: {} is http:// to another machine, where ids would travel in clear text; use https:// (http:// is taken only on this machine's loopback)",
                app.endpoint_var()
            ),
            Reason::Local => "local: events are kept on this machine (`telemetry show` lists them) and never sent".into(),
            Reason::Ci => "enabled, in CI: runs count under one pseudonymous id per CI vendor and project".into(),
            Reason::Enabled => "enabled".into(),
        }
    }
}

/// Where the mode came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeSource {
    /// An environment variable, named (`DO_NOT_TRACK`, `PIPERIDER_TELEMETRY`, ...).
    Environment(String),
    /// The profile.
    Profile,
    /// Nothing chose: on (a profile is made, with the notice, on the first run).
    Default,
}

impl std::fmt::Display for ModeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModeSource::Environment(var) => write!(f, "environment ({var})"),
            ModeSource::Profile => f.write_str("profile"),
            ModeSource::Default => f.write_str("default"),
        }
    }
}

/// The outcome of the rules, with what they read.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Whether an event may be recorded (sent when `mode` is on, kept on
    /// this machine when it is local).
    pub enabled: bool,
    /// The first rule that matched.
    pub reason: Reason,
    /// The mode the user chose (the environment can only narrow the
    /// profile's: `off` or `local` there wins, `on` there changes nothing).
    /// A project without a telemetry id, or no endpoint, turns recording
    /// off without changing the mode.
    pub mode: TelemetryMode,
    /// Where `mode` came from.
    pub mode_source: ModeSource,
    /// The profile as read, when there is one and it could be read.
    pub profile: Option<Profile>,
    /// Why the profile could not be read, when it could not.
    pub profile_error: Option<String>,
    /// The config file of the project the command ran in.
    pub project_config: Option<PathBuf>,
    /// The project's telemetry id; `None` outside a project or when removed.
    pub project_id: Option<ProjectId>,
    /// The first data source type the project configures.
    pub datasource_type: Option<String>,
    /// The CI vendor (`github_actions`, ...), when the command runs in CI.
    pub ci: Option<&'static str>,
}

/// What the rules read: the app, its environment, its folder, the
/// working folder, and whether an endpoint is configured.
#[derive(Debug)]
pub(crate) struct Inputs<'a> {
    pub(crate) app: &'a AppInfo,
    pub(crate) env: &'a Env,
    pub(crate) home: Option<&'a AppHome>,
    pub(crate) cwd: &'a Path,
    pub(crate) has_endpoint: bool,
    /// The configured endpoint is `http://` to a host that is not loopback.
    pub(crate) insecure_endpoint: bool,
}

/// Every rule, in order.
pub(crate) fn decide(c: &Inputs<'_>) -> Decision {
    let user = user_rules(c);
    project_rules(c, user)
}

/// The same decision with what `status` shows read even where an
/// environment variable decided early.
pub(crate) fn decide_with_facts(c: &Inputs<'_>) -> Decision {
    let d = decide(c);
    match d.reason {
        Reason::DoNotTrack | Reason::DisabledByEnv | Reason::OffByEnv | Reason::ModeVarUnknown => {
            with_facts(c, d)
        }
        _ => d,
    }
}

fn off(mut d: Decision, reason: Reason) -> Decision {
    d.reason = reason;
    d.enabled = false;
    d
}

/// Off by the environment: the mode is off, and the variable is its source.
fn off_by(mut d: Decision, reason: Reason, var: String) -> Decision {
    d.mode = TelemetryMode::Off;
    d.mode_source = ModeSource::Environment(var);
    off(d, reason)
}

/// What the environment says of the mode before any file is read: `Err`
/// when it turns telemetry off (and names the rule), `Ok(Some(Local))`
/// when it narrows it to local, `Ok(None)` when it leaves it to the profile.
pub(crate) fn env_mode(
    app: &AppInfo,
    env: &Env,
) -> Result<Option<TelemetryMode>, (Reason, String)> {
    if env.flag("DO_NOT_TRACK") {
        return Err((Reason::DoNotTrack, "DO_NOT_TRACK".into()));
    }
    if env.flag(&app.disabled_var()) {
        return Err((Reason::DisabledByEnv, app.disabled_var()));
    }
    let Some(value) = env.get(&app.mode_var()).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    match TelemetryMode::parse(value) {
        Some(TelemetryMode::Off) => Err((Reason::OffByEnv, app.mode_var())),
        None => Err((Reason::ModeVarUnknown, app.mode_var())),
        Some(TelemetryMode::Local) => Ok(Some(TelemetryMode::Local)),
        Some(TelemetryMode::On) => Ok(None),
    }
}

/// Rules 1 to 3: the environment and the profile. These hold for the whole
/// command, so the collector applies them once, early.
pub(crate) fn user_rules(c: &Inputs<'_>) -> Decision {
    let app = c.app;
    let d = Decision {
        enabled: true,
        reason: Reason::Enabled,
        profile: None,
        profile_error: None,
        project_config: None,
        project_id: None,
        datasource_type: None,
        ci: c.env.ci_vendor(),
        mode: TelemetryMode::On,
        mode_source: ModeSource::Default,
    };
    // Rules 1 and 2 need no file read.
    let narrowed = match env_mode(app, c.env) {
        Ok(narrowed) => narrowed,
        Err((reason, var)) => return off_by(d, reason, var),
    };
    let Some(home) = c.home else {
        return off(d, Reason::NoHome);
    };
    let mut d = d;
    // Rule 3: the profile.
    match ProfileStore::for_home(home).load() {
        Ok(profile) => d.profile = profile,
        Err(e) => {
            d.profile_error = Some(e.to_string());
            return off(d, Reason::ProfileUnreadable);
        }
    }
    if let Some(profile) = &d.profile {
        d.mode = profile.mode();
        d.mode_source = ModeSource::Profile;
    }
    if d.mode == TelemetryMode::Off {
        return off(d, Reason::ProfileOptOut);
    }
    if narrowed == Some(TelemetryMode::Local) {
        d.mode = TelemetryMode::Local;
        d.mode_source = ModeSource::Environment(app.mode_var());
    }
    d
}

/// Rules 4 to 6 on top of [`user_rules`]: the project, the first run, CI,
/// and somewhere to send. Applied when the command ends, because a command
/// (`init`) can create the project it ran in.
pub(crate) fn project_rules(c: &Inputs<'_>, mut d: Decision) -> Decision {
    if !d.enabled {
        return d;
    }
    let Some(home) = c.home else {
        return off(d, Reason::NoHome);
    };
    // Rule 4: the project.
    if let Some(store) = ConfigStore::discover(home, c.cwd) {
        d.project_config = Some(store.path().to_path_buf());
        match store.load() {
            Ok(config) => {
                d.datasource_type = config.data_sources.iter().find_map(|s| s.kind.clone());
                match config.telemetry_id {
                    Some(id) => d.project_id = Some(id),
                    None => return off(d, Reason::ProjectOptOut),
                }
            }
            Err(_) => return off(d, Reason::ProjectConfigUnreadable),
        }
    }
    // Rules 5 and 6: first run (outside CI), CI.
    if d.ci.is_none() && d.profile.is_none() {
        return off(d, Reason::FirstRun);
    }
    // Kept on this machine: no endpoint is needed.
    if d.mode == TelemetryMode::Local {
        d.reason = Reason::Local;
        return d;
    }
    if !c.has_endpoint {
        return off(d, Reason::NoEndpoint);
    }
    if c.insecure_endpoint {
        return off(d, Reason::InsecureEndpoint);
    }
    d.reason = if d.ci.is_some() {
        Reason::Ci
    } else {
        Reason::Enabled
    };
    d
}

/// Reads the profile and project for `status`, without changing the decision.
fn with_facts(c: &Inputs<'_>, mut d: Decision) -> Decision {
    if let Some(home) = c.home {
        match ProfileStore::for_home(home).load() {
            Ok(profile) => d.profile = profile,
            Err(e) => d.profile_error = Some(e.to_string()),
        }
        if let Some(store) = ConfigStore::discover(home, c.cwd) {
            d.project_config = Some(store.path().to_path_buf());
            d.project_id = store.load().ok().and_then(|cfg| cfg.telemetry_id);
        }
    }
    d
}
