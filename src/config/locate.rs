//! Where in the config text a key lives: key paths (`printer[2].baud`) to
//! line numbers and back, using toml's spanned document tree.
//!
//! Only used to make error messages point at the right line; never decides
//! whether a config is valid.

use std::fmt;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `printer[2].baud`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// `KeyPath::of("mqtt", None, "port")`, `KeyPath::of("printer", Some(2), "baud")`.
    pub fn of(table: &str, index: Option<usize>, key: &str) -> KeyPath {
        let mut segs = vec![Seg::Key(table.to_owned())];
        segs.extend(index.map(Seg::Index));
        if !key.is_empty() {
            segs.push(Seg::Key(key.to_owned()));
        }
        KeyPath(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// 1-based line of byte offset `at`.
pub fn line_of(text: &str, at: usize) -> usize {
    let end = at.min(text.len());
    text.as_bytes()
        .iter()
        .take(end)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line where `path` is defined (its key, or its table header), if the
/// text parses and the key is present; a missing key gives the line of its
/// nearest present parent.
pub fn line_for(text: &str, path: &KeyPath) -> Option<usize> {
    let doc = DeTable::parse(text).ok()?;
    offset_of(doc.get_ref(), &path.0).map(|at| line_of(text, at))
}

fn offset_of(table: &DeTable<'_>, segs: &[Seg]) -> Option<usize> {
    let (Some(Seg::Key(key)), rest) = (segs.first(), segs.get(1..).unwrap_or_default()) else {
        return None;
    };
    let (k, v) = table.iter().find(|(k, _)| k.get_ref() == key)?;
    let (value, rest, here) = match (rest.first(), v.get_ref()) {
        (Some(Seg::Index(n)), DeValue::Array(items)) => {
            let item = items.get(*n)?;
            (item, rest.get(1..).unwrap_or_default(), item.span().start)
        }
        _ => (v, rest, k.span().start),
    };
    match value.get_ref() {
        DeValue::Table(t) if !rest.is_empty() => offset_of(t, rest).or(Some(here)),
        _ => Some(here),
    }
}

/// The key path of the key or value at byte offset `at` (for serde errors,
/// which carry a span but no public key path). Table and array spans from
/// `[header]` syntax do not cover their contents, so every branch is searched.
pub fn path_at(text: &str, at: usize) -> KeyPath {
    let mut path = KeyPath::default();
    if let Ok(doc) = DeTable::parse(text) {
        if !find_table(doc.get_ref(), at, &mut path) {
            path.0.clear();
        }
    }
    path
}

fn find_table(table: &DeTable<'_>, at: usize, path: &mut KeyPath) -> bool {
    for (k, v) in table.iter() {
        path.0.push(Seg::Key(k.get_ref().to_string()));
        if k.span().contains(&at) || find_value(v, at, path) {
            return true;
        }
        path.0.pop();
    }
    false
}

fn find_value(value: &Spanned<DeValue<'_>>, at: usize, path: &mut KeyPath) -> bool {
    match value.get_ref() {
        DeValue::Table(t) => find_table(t, at, path),
        DeValue::Array(items) => {
            for (n, item) in items.iter().enumerate() {
                path.0.push(Seg::Index(n));
                if find_value(item, at, path) || item.span().contains(&at) {
                    return true;
                }
                path.0.pop();
            }
            false
        }
        _ => value.span().contains(&at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "[gateway]\nid = \"gw\"\n\n[[printer]]\nid = \"a\"\n\n[[printer]]\nid = \"b\"\nbaud = 0\n";

    #[test]
    fn finds_lines_of_keys_and_array_tables() {
        assert_eq!(line_for(TEXT, &KeyPath::of("gateway", None, "id")), Some(2));
        assert_eq!(
            line_for(TEXT, &KeyPath::of("printer", Some(1), "baud")),
            Some(9)
        );
        assert_eq!(
            line_for(TEXT, &KeyPath::of("printer", Some(1), "nope")),
            Some(7)
        );
        assert_eq!(line_for(TEXT, &KeyPath::of("mqtt", None, "host")), None);
    }

    #[test]
    fn finds_path_of_an_offset() {
        let at = TEXT.find("baud").unwrap();
        assert_eq!(path_at(TEXT, at).to_string(), "printer[1].baud");
    }
}
