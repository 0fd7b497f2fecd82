//! Facts about the machine: platform, and the salted ids that stand for a
//! device or a CI vendor without revealing anything recomputable elsewhere.

use piperider_event::{DeviceId, Platform, ProjectId, UserId};
use sha2::{Digest, Sha256};

/// The operating system, architecture and OS release, read from files (no
/// process is started: this runs on the host command's path).
pub(crate) fn platform() -> Platform {
    Platform {
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        os_version: os_version().unwrap_or_else(|| "unknown".to_string()),
    }
}

fn os_version() -> Option<String> {
    let raw = if cfg!(target_os = "linux") {
        std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?
    } else if cfg!(target_os = "macos") {
        let plist =
            std::fs::read_to_string("/System/Library/CoreServices/SystemVersion.plist").ok()?;
        let key = plist.find("<key>ProductVersion</key>")?;
        let rest = &plist[key..];
        let start = rest.find("<string>")? + "<string>".len();
        let end = rest[start..].find("</string>")?;
        rest[start..start + end].to_string()
    } else {
        return None;
    };
    numeric_release(&raw)
}

/// The numeric part of a release (`6.1.0` of `6.1.0-13-custom-bob`): a
/// kernel's local version can name a host or a person, and the documented
/// field is the operating system's release, nothing more.
pub(crate) fn numeric_release(raw: &str) -> Option<String> {
    let numeric: String = raw
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .take(piperider_event::limits::MAX_VERSION_LEN)
        .collect();
    let numeric = numeric.trim_end_matches('.');
    numeric
        .starts_with(|c: char| c.is_ascii_digit())
        .then(|| numeric.to_string())
}

/// The machine id the OS keeps (Linux and the BSDs), if readable.
pub(crate) fn machine_id() -> Option<String> {
    [
        "/etc/machine-id",
        "/var/lib/dbus/machine-id",
        "/var/db/machine-id",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty())
}

fn salted(app: &str, purpose: &str, parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    // The salt makes the digest specific to this app and purpose, so it
    // cannot be joined with another tool's hash of the same machine id.
    hasher.update(format!("{app}-telemetry/{purpose}/v1").as_bytes());
    for part in parts {
        hasher.update([0u8]);
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// The device id: the machine id hashed with an app-specific salt and the
/// user id, so a reset (a new user id) cannot be linked to the old one
/// through the device.
pub(crate) fn device_id_from_machine(app: &str, machine_id: &str, user: &UserId) -> DeviceId {
    DeviceId::from_digest(&salted(app, "device", &[machine_id, user.as_str()]))
}

/// One pseudonymous user per CI vendor and project, so CI runs do not count as people.
pub(crate) fn ci_user_id(app: &str, vendor: &str, project: Option<&ProjectId>) -> UserId {
    let digest = salted(
        app,
        "ci-user",
        &[vendor, project.map_or("", |p| p.as_str())],
    );
    let hex = DeviceId::from_digest(&digest);
    hex.as_str()[..32].parse().expect("32 hex digits")
}

/// One pseudonymous device per CI vendor.
pub(crate) fn ci_device_id(app: &str, vendor: &str) -> DeviceId {
    DeviceId::from_digest(&salted(app, "ci-device", &[vendor]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_salted_per_app_and_user_and_stable() {
        let user: UserId = "3f6a1c9e0b2d4e7f8a5c6b1d2e3f4a5b".parse().unwrap();
        let a = device_id_from_machine("piperider", "0123456789abcdef", &user);
        assert_eq!(
            a,
            device_id_from_machine("piperider", "0123456789abcdef", &user)
        );
        assert_ne!(
            a,
            device_id_from_machine("other-cli", "0123456789abcdef", &user)
        );
        // After a reset the same machine is another device.
        let reset = UserId::random();
        assert_ne!(
            a,
            device_id_from_machine("piperider", "0123456789abcdef", &reset)
        );
        assert_eq!(a.as_str().len(), 64);
        // Not the plain SHA-256 of the machine id.
        let plain = DeviceId::from_digest(&Sha256::digest(b"0123456789abcdef").into());
        assert_ne!(a, plain);
    }

    #[test]
    fn ci_pseudonyms_differ_by_vendor_and_project() {
        let p: ProjectId = "dc243c0c67204d4bb15740617505cb26".parse().unwrap();
        let gh = ci_user_id("piperider", "github_actions", Some(&p));
        assert_ne!(gh, ci_user_id("piperider", "gitlab_ci", Some(&p)));
        assert_ne!(gh, ci_user_id("piperider", "github_actions", None));
        assert_eq!(gh, ci_user_id("piperider", "github_actions", Some(&p)));
    }

    #[test]
    fn only_the_numeric_release_is_kept() {
        for (raw, kept) in [
            ("6.1.0-13-custom-bob\n", Some("6.1.0")),
            ("6.18.44-fc-v1252", Some("6.18.44")),
            ("14.5", Some("14.5")),
            ("5.15.0.", Some("5.15.0")),
            ("bob-6.1", None),
            ("", None),
        ] {
            assert_eq!(numeric_release(raw).as_deref(), kept, "{raw:?}");
        }
    }

    #[test]
    fn platform_is_well_formed() {
        let p = platform();
        assert!(!p.os.is_empty() && !p.arch.is_empty() && !p.os_version.is_empty());
    }
}
