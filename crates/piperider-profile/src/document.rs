//! One YAML file in memory: its exact text, its typed value, and lossless
//! edits of single keys.
//!
//! serde_yaml reads (it checks the syntax and gives line and column);
//! yaml-edit edits the text (it keeps comments, blank lines and key order).
//! Every edit is checked by reading the new text back with serde_yaml and
//! comparing it with the old value changed by that one edit: if anything
//! else moved, the edit is refused.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use rowan::ast::AstNode;
use serde_yaml::{Mapping, Value};
use yaml_edit::{Document, MappingBuilder};

use crate::ProfileError;

/// A scalar value an edit writes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Str(String),
    Bool(bool),
}

impl Scalar {
    fn to_value(&self) -> Value {
        match self {
            Scalar::Str(s) => Value::String(s.clone()),
            Scalar::Bool(b) => Value::Bool(*b),
        }
    }
}

/// One change to one key, addressed by its path from the root (`["telemetry", "id"]`).
#[derive(Debug, Clone)]
pub(crate) enum Edit<'a> {
    Set(&'a [&'a str], Scalar),
    Remove(&'a [&'a str]),
}

impl Edit<'_> {
    fn path(&self) -> &[&str] {
        match self {
            Edit::Set(p, _) | Edit::Remove(p) => p,
        }
    }
}

#[derive(Debug)]
pub(crate) struct YamlText {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
    pub(crate) value: Value,
}

impl YamlText {
    /// Parses `text`; a syntax error names the file, line and column. The
    /// root must be a mapping, or empty (a file of comments only).
    pub(crate) fn parse(path: &Path, text: String) -> Result<Self, ProfileError> {
        let value: Value = serde_yaml::from_str(&text).map_err(|e| syntax_error(path, &e))?;
        let doc = YamlText {
            path: path.to_path_buf(),
            text,
            value,
        };
        match doc.value {
            Value::Mapping(_) | Value::Null => Ok(doc),
            _ => Err(doc.field_error(&[], "must be a mapping of keys to values")),
        }
    }

    pub(crate) fn get(&self, path: &[&str]) -> Option<&Value> {
        value_at(&self.value, path)
    }

    /// An error about the field at `path`, located at its line and column when it exists.
    pub(crate) fn field_error(&self, path: &[&str], reason: impl Into<String>) -> ProfileError {
        let (line, column) = match locate(&self.text, path) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        ProfileError::Field {
            path: self.path.clone(),
            field: if path.is_empty() {
                "(document)".to_string()
            } else {
                path.join(".")
            },
            line,
            column,
            reason: reason.into(),
        }
    }

    /// The text after `edits`, with every other byte kept. Fails, writing
    /// nothing, when the result read back differs from the old value changed
    /// by exactly these edits.
    pub(crate) fn edited(&self, edits: &[Edit<'_>]) -> Result<String, ProfileError> {
        let mut expected = self.value.clone();
        let mut text = self.text.clone();
        for edit in edits {
            let refused = || ProfileError::Edit {
                path: self.path.clone(),
                field: edit.path().join("."),
            };
            if let Edit::Remove(path) = edit
                && value_at(&expected, path).is_none()
            {
                continue; // nothing to remove
            }
            apply_to_value(&mut expected, edit);
            text = apply_to_text(&text, edit).ok_or_else(refused)?;
            let got: Value = serde_yaml::from_str(&text).map_err(|_| refused())?;
            if normalized(&got) != normalized(&expected) {
                return Err(refused());
            }
        }
        Ok(text)
    }
}

fn value_at<'v>(mut value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    for key in path {
        value = value.as_mapping()?.get(*key)?;
    }
    Some(value)
}

fn syntax_error(path: &Path, err: &serde_yaml::Error) -> ProfileError {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let message = err.to_string();
    // serde_yaml repeats the position in its message; the prefix says it already.
    let suffix = format!(" at line {line} column {column}");
    let message = match message.find(&suffix) {
        Some(i) => format!("{}{}", &message[..i], &message[i + suffix.len()..]),
        None => message,
    };
    ProfileError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// Line and column (1-based) of the entry at `path`.
fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let (leaf, parents) = path.split_last()?;
    let doc = Document::from_str(text).ok()?;
    let mut mapping = doc.as_mapping()?;
    for key in parents {
        mapping = mapping.get_mapping(*key)?;
    }
    let entry = mapping.find_entry_by_key(*leaf)?;
    let offset = usize::from(entry.syntax().text_range().start());
    let lc = yaml_edit::byte_offset_to_line_column(text, offset);
    Some((lc.line, lc.column))
}

/// Empty mappings and nulls mean the same to every reader of these files
/// (`telemetry:` and `telemetry: {}` both hold no id).
fn normalized(value: &Value) -> Value {
    match value {
        Value::Mapping(m) if m.is_empty() => Value::Null,
        Value::Mapping(m) => {
            Value::Mapping(m.iter().map(|(k, v)| (k.clone(), normalized(v))).collect())
        }
        Value::Sequence(s) => Value::Sequence(s.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

fn apply_to_value(value: &mut Value, edit: &Edit<'_>) {
    match edit {
        Edit::Set(path, scalar) => {
            let mut cursor = value;
            for key in path.iter() {
                if !cursor.is_mapping() {
                    *cursor = Value::Mapping(Mapping::new());
                }
                let map = cursor.as_mapping_mut().expect("made a mapping above");
                cursor = map.entry(Value::from(*key)).or_insert(Value::Null);
            }
            *cursor = scalar.to_value();
        }
        Edit::Remove(path) => {
            let Some((leaf, parents)) = path.split_last() else {
                return;
            };
            let mut cursor = value;
            for key in parents {
                match cursor.get_mut(*key) {
                    Some(next) => cursor = next,
                    None => return,
                }
            }
            if let Some(map) = cursor.as_mapping_mut() {
                map.remove(*leaf);
            }
        }
    }
}

fn apply_to_text(text: &str, edit: &Edit<'_>) -> Option<String> {
    match edit {
        Edit::Set(path, scalar) => set_in_text(text, path, scalar),
        Edit::Remove(path) => remove_from_text(text, path),
    }
}

fn set_in_text(text: &str, path: &[&str], scalar: &Scalar) -> Option<String> {
    // yaml-edit reads a file of comments only as no document at all.
    if let Some(mapping) = Document::from_str(text)
        .ok()
        .and_then(|d| d.as_mapping().map(|m| (d, m)))
    {
        let (doc, mapping) = mapping;
        set_in_mapping(&mapping, path, scalar)?;
        return Some(doc.to_string());
    }
    // Empty, or comments only: append the new keys after what is there. If
    // the text did hold a mapping after all, the read-back check refuses the
    // duplicate keys this makes.
    let fresh = Document::new_mapping();
    set_in_mapping(&fresh.as_mapping()?, path, scalar)?;
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&fresh.to_string());
    Some(out)
}

fn set_in_mapping(mapping: &yaml_edit::Mapping, path: &[&str], scalar: &Scalar) -> Option<()> {
    let (first, rest) = path.split_first()?;
    if rest.is_empty() {
        match scalar {
            Scalar::Str(s) => mapping.set(*first, s.as_str()),
            Scalar::Bool(b) => mapping.set(*first, *b),
        };
        return Some(());
    }
    if let Some(child) = mapping.get_mapping(*first) {
        return set_in_mapping(&child, rest, scalar);
    }
    // The parent is missing or not a mapping (`telemetry:` with no value): build it.
    let built = build_nested(rest, scalar).build_document();
    mapping.set(*first, built.as_mapping()?);
    Some(())
}

fn build_nested(path: &[&str], scalar: &Scalar) -> MappingBuilder {
    match path {
        [leaf] => match scalar {
            Scalar::Str(s) => MappingBuilder::new().pair(*leaf, s.as_str()),
            Scalar::Bool(b) => MappingBuilder::new().pair(*leaf, *b),
        },
        [first, rest @ ..] => {
            let inner = build_nested(rest, scalar);
            MappingBuilder::new().insert_mapping(*first, inner)
        }
        [] => MappingBuilder::new(),
    }
}

fn remove_from_text(text: &str, path: &[&str]) -> Option<String> {
    let (leaf, parents) = path.split_last()?;
    let doc = Document::from_str(text).ok()?;
    let Some(mut mapping) = doc.as_mapping() else {
        return Some(text.to_string());
    };
    for key in parents {
        match mapping.get_mapping(*key) {
            Some(child) => mapping = child,
            None => return Some(text.to_string()),
        }
    }
    let Some(entry) = mapping.find_entry_by_key(*leaf) else {
        return Some(text.to_string());
    };
    let range = entry.syntax().text_range();
    if let Some(out) = cut_whole_lines(text, range.start().into(), range.end().into()) {
        return Some(out);
    }
    // The entry shares its line with other content (flow style): let the editor splice it.
    mapping.remove(*leaf);
    Some(doc.to_string())
}

/// Removes the lines `start..end` spans when nothing but indentation
/// precedes it on its first line and nothing but a comment follows it on its
/// last. Leaves the lines around it (comments, blank lines) alone.
fn cut_whole_lines(text: &str, start: usize, end: usize) -> Option<String> {
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    if !text[line_start..start]
        .chars()
        .all(|c| c == ' ' || c == '\t')
    {
        return None;
    }
    let mut line_end = end;
    if !text[..end].ends_with('\n') {
        let rest_end = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
        let rest = text[end..rest_end].trim();
        if !(rest.is_empty() || rest.starts_with('#')) {
            return None;
        }
        line_end = rest_end;
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..line_start]);
    out.push_str(&text[line_end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> YamlText {
        YamlText::parse(Path::new("t.yml"), text.to_string()).unwrap()
    }

    #[test]
    fn set_adds_and_changes_keys() {
        let d = doc("# head\na: 1 # one\n\nb: x\n");
        let out = d
            .edited(&[Edit::Set(&["b"], Scalar::Str("y".into()))])
            .unwrap();
        assert_eq!(out, "# head\na: 1 # one\n\nb: y\n");
        let out = d
            .edited(&[Edit::Set(&["c", "d"], Scalar::Bool(true))])
            .unwrap();
        assert_eq!(out, "# head\na: 1 # one\n\nb: x\nc:\n  d: true\n");
    }

    #[test]
    fn set_fills_an_empty_parent() {
        let d = doc("a: 1\ntelemetry:\n");
        let out = d
            .edited(&[Edit::Set(&["telemetry", "id"], Scalar::Str("ab".into()))])
            .unwrap();
        assert_eq!(
            serde_yaml::from_str::<Value>(&out).unwrap()["telemetry"]["id"],
            "ab"
        );
        assert!(out.starts_with("a: 1\n"));
    }

    #[test]
    fn set_on_comment_only_file_appends() {
        let d = doc("# nothing yet\n");
        let out = d
            .edited(&[Edit::Set(&["k"], Scalar::Str("v".into()))])
            .unwrap();
        assert_eq!(out, "# nothing yet\nk: v\n");
        let out = doc("")
            .edited(&[Edit::Set(&["k"], Scalar::Bool(false))])
            .unwrap();
        assert_eq!(out, "k: false\n");
    }

    #[test]
    fn values_that_look_like_other_types_stay_strings() {
        for v in [
            "yes",
            "123",
            "1234e5678",
            "0b70e2c9ace1486ca1c2c4ab853ccefc",
            "0x1f",
            "0o17",
            "12345678901234567890123456789012",
            "null",
            "a: b",
            "# x",
            "",
        ] {
            let out = doc("k: 1\n")
                .edited(&[Edit::Set(&["k"], Scalar::Str(v.into()))])
                .unwrap();
            assert_eq!(
                serde_yaml::from_str::<Value>(&out).unwrap()["k"],
                v,
                "{out}"
            );
        }
    }

    #[test]
    fn remove_cuts_only_the_entry_lines() {
        let d = doc("a: 1\nt:\n  # keep me\n  id: x # old\n  other: 2\nb: 3\n");
        let out = d.edited(&[Edit::Remove(&["t", "id"])]).unwrap();
        assert_eq!(out, "a: 1\nt:\n  # keep me\n  other: 2\nb: 3\n");
        let out = doc("a: 1\nb: 2").edited(&[Edit::Remove(&["b"])]).unwrap();
        assert_eq!(out, "a: 1\n");
    }

    #[test]
    fn remove_in_flow_style_and_absent_keys() {
        let out = doc("t: {id: x, k: 1}\n")
            .edited(&[Edit::Remove(&["t", "id"])])
            .unwrap();
        let v: Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["t"]["k"], 1);
        assert!(v["t"].get("id").is_none());
        let d = doc("a: 1\n");
        assert_eq!(d.edited(&[Edit::Remove(&["zz", "id"])]).unwrap(), "a: 1\n");
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let err = YamlText::parse(Path::new("p.yml"), "a: 1\nb: [x\n".into()).unwrap_err();
        match err {
            ProfileError::Syntax {
                line,
                column,
                ref message,
                ..
            } => {
                assert_eq!((line, column), (3, 1));
                assert!(!message.contains("at line 3 column 1"), "{message}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn field_errors_point_at_the_key() {
        let d = doc("# c\nuser_id: x\nnested:\n  flag: maybe\n");
        let err = d.field_error(&["nested", "flag"], "is not a boolean");
        assert_eq!(err.to_string(), "t.yml:4:3: `nested.flag` is not a boolean");
    }
}
