//! Who PipeRider is to its telemetry: name, version, runtime, the first-run notice.

use piperider_collector::AppInfo;
use piperider_event::Runtime;

pub(crate) fn info() -> AppInfo {
    AppInfo {
        name: "piperider".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        runtime: Runtime {
            name: "rust".into(),
            version: env!("PIPERIDER_RUSTC_VERSION").into(),
        },
        default_endpoint: option_env!("PIPERIDER_DEFAULT_TELEMETRY_ENDPOINT").map(str::to_string),
        notice: NOTICE.into(),
    }
}

const NOTICE: &str = "\
PipeRider collects anonymous usage statistics to learn how it is used: the
command, how long it took and whether it worked; counts of tables, columns,
rows and assertions; the data source type; your platform and versions. It
never collects your data, table or column names, paths, hosts or error
messages. Nothing was sent for this command.

  Opt out:        piperider telemetry disable  (or DO_NOT_TRACK=1)
  What is sent:   piperider telemetry show     (or PIPERIDER_TELEMETRY_DEBUG=1)
  Read more:      docs/telemetry.md in the piperider-telemetry repository
";
