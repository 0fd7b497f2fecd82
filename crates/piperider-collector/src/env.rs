//! The environment variables telemetry reads, captured once per process.

use std::collections::BTreeMap;

/// A snapshot of the environment. Tests build one by hand.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process's variables; those that are not UTF-8 are left out, and
    /// a value that is not is read lossily.
    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| {
                    Some((k.into_string().ok()?, v.to_string_lossy().into_owned()))
                })
                .collect(),
        }
    }

    /// Exactly these variables, and no others: what tests and examples use
    /// so that the machine's own settings cannot leak in.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The variable's value, when set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// A switch that is on when set to anything but empty, `0` or `false`
    /// (the `DO_NOT_TRACK` convention).
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| {
            let v = v.trim();
            !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
        })
    }

    /// The CI vendor this process runs under, if any.
    pub fn ci_vendor(&self) -> Option<&'static str> {
        const VENDORS: &[(&str, &str)] = &[
            ("GITHUB_ACTIONS", "github_actions"),
            ("GITLAB_CI", "gitlab_ci"),
            ("BUILDKITE", "buildkite"),
            ("CIRCLECI", "circleci"),
            ("JENKINS_URL", "jenkins"),
            ("TF_BUILD", "azure_pipelines"),
            ("TRAVIS", "travis"),
            ("BITBUCKET_BUILD_NUMBER", "bitbucket"),
            ("TEAMCITY_VERSION", "teamcity"),
            ("CODEBUILD_BUILD_ID", "aws_codebuild"),
            ("DRONE", "drone"),
            ("APPVEYOR", "appveyor"),
        ];
        for (var, vendor) in VENDORS {
            if self.get(var).is_some_and(|v| !v.is_empty()) {
                return Some(vendor);
            }
        }
        self.flag("CI").then_some("generic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_do_not_track_convention() {
        let env = Env::from_pairs([
            ("A", "1"),
            ("B", "0"),
            ("C", ""),
            ("D", "false"),
            ("E", "FALSE"),
            ("F", "yes"),
            ("G", " true "),
        ]);
        assert!(env.flag("A"));
        assert!(!env.flag("B"));
        assert!(!env.flag("C"));
        assert!(!env.flag("D"));
        assert!(!env.flag("E"));
        assert!(env.flag("F"));
        assert!(env.flag("G"));
        assert!(!env.flag("MISSING"));
    }

    #[test]
    fn ci_vendors() {
        assert_eq!(
            Env::from_pairs([("GITHUB_ACTIONS", "true"), ("CI", "true")]).ci_vendor(),
            Some("github_actions")
        );
        assert_eq!(
            Env::from_pairs([("JENKINS_URL", "http://j")]).ci_vendor(),
            Some("jenkins")
        );
        assert_eq!(Env::from_pairs([("CI", "1")]).ci_vendor(), Some("generic"));
        assert_eq!(Env::from_pairs([("CI", "false")]).ci_vendor(), None);
        assert_eq!(Env::from_pairs([("HOME", "/h")]).ci_vendor(), None);
    }
}
