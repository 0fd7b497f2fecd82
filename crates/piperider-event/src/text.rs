//! Rules for the short strings of the wire format.

use crate::Violation;

/// A short machine name: 1 to `max` characters of `a-z 0-9 _ . -`, starting
/// with a letter or digit (`linux`, `x86_64`, `python`, `github_actions`).
pub(crate) fn check_token(value: &str, field: &str, max: usize) -> Result<(), Violation> {
    if value.is_empty() || value.len() > max {
        return Err(Violation::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    let first_ok = value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(Violation::new(
            field,
            "must be lowercase letters, digits, '_', '.' or '-', starting with a letter or digit",
        ))
    }
}

/// A version or description: 1 to `max` characters (as JSON Schema counts
/// them: code points) of printable text, no control characters.
pub(crate) fn check_printable(value: &str, field: &str, max: usize) -> Result<(), Violation> {
    if value.is_empty() || value.chars().count() > max {
        return Err(Violation::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Violation::new(field, "must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(check_token("x86_64", "f", 32).is_ok());
        assert!(check_token("github_actions", "f", 32).is_ok());
        assert!(check_token("", "f", 32).is_err());
        assert!(check_token("Linux", "f", 32).is_err());
        assert!(check_token("-x", "f", 32).is_err());
        assert!(check_token("a b", "f", 32).is_err());
        assert!(check_token(&"a".repeat(33), "f", 32).is_err());
    }

    #[test]
    fn printable() {
        assert!(check_printable("Windows 10.0.19045", "f", 64).is_ok());
        assert!(check_printable("a\nb", "f", 64).is_err());
        assert!(check_printable("", "f", 64).is_err());
        let err = check_printable(&"x".repeat(65), "platform.os_version", 64).unwrap_err();
        assert_eq!(err.field, "platform.os_version");
    }
}
