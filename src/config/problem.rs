//! Problems found in a configuration: what is wrong, with which setting, and where it was
//! written (a config file's line, or the command line), so that every problem of a run can
//! be reported at once, each naming the place to fix.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a setting was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    File {
        path: PathBuf,
        line: Option<usize>,
    },
    /// A default, or a value derived from several settings.
    Derived,
}

/// One segment of a setting's place in the config file: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A setting's place in the config file, e.g. `process-group[1].mount[0].script`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn key(name: &str) -> KeyPath {
        KeyPath(vec![Seg::Key(name.to_string())])
    }

    pub fn push_key(mut self, name: &str) -> KeyPath {
        self.0.push(Seg::Key(name.to_string()));
        self
    }

    pub fn push_index(mut self, i: usize) -> KeyPath {
        self.0.push(Seg::Index(i));
        self
    }

    /// The last key (the setting's own name).
    pub fn leaf(&self) -> Option<&str> {
        self.0.iter().rev().find_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
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

/// A problem with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    /// What the problem is about as users name it (`threads`, `mount /blog`,
    /// `process-group "shop"`); empty when the message says it all.
    pub subject: String,
    pub message: String,
}

impl Problem {
    pub fn new(subject: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            origin: Origin::Derived,
            subject: subject.into(),
            message: message.into(),
        }
    }

    pub fn at(mut self, origin: Origin) -> Problem {
        self.origin = origin;
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "config file {}, line {line}: ", path.display())?,
            Origin::File { path, line: None } => write!(f, "config file {}: ", path.display())?,
            Origin::CommandLine => f.write_str("command line: ")?,
            Origin::Derived => {}
        }
        if self.subject.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.subject, self.message)
        }
    }
}

/// A config file's text, for the lines of the settings written in it.
pub struct Source {
    pub path: PathBuf,
    text: String,
    doc: Option<toml_edit::ImDocument<String>>,
}

impl Source {
    pub fn new(path: &Path, text: String) -> Source {
        let doc = toml_edit::ImDocument::parse(text.clone()).ok();
        Source {
            path: path.to_path_buf(),
            text,
            doc,
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// The line where the setting at `path` is written; `None` when it is not in this file.
    pub fn line(&self, path: &KeyPath) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let span = find_in_table(doc.as_table(), &path.0, None)?;
        Some(self.line_of(span.start))
    }
}

type Span = Option<std::ops::Range<usize>>;

fn find_in_table(table: &dyn toml_edit::TableLike, segs: &[Seg], span: Span) -> Span {
    let Some((seg, rest)) = segs.split_first() else {
        return span;
    };
    let Seg::Key(k) = seg else {
        return None;
    };
    let (key, item) = table.get_key_value(k)?;
    let span = key.span().or(span);
    if rest.is_empty() {
        return span;
    }
    if let Some(t) = item.as_table_like() {
        return find_in_table(t, rest, span);
    }
    let (Seg::Index(i), rest) = rest.split_first()? else {
        return None;
    };
    if let Some(tables) = item.as_array_of_tables() {
        let t = tables.get(*i)?;
        return find_in_table(t, rest, t.span().or(span));
    }
    let value = item.as_array()?.get(*i)?;
    match value.as_inline_table() {
        Some(t) => find_in_table(t, rest, value.span().or(span)),
        None if rest.is_empty() => value.span().or(span),
        None => None,
    }
}

/// "did you mean ...?" for a misspelt key, from the keys that exist there.
pub fn suggestion(unknown: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(unknown, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_keys_in_tables_and_arrays_of_tables() {
        let src = Source::new(
            Path::new("/x.toml"),
            "threads = 2\n\n[[mount]]\nprefix = '/'\nscript = 'a'\n\n[[process-group]]\n\
             name = 'shop'\n[[process-group]]\nname = 'b'\nthreads = 3\n  [[process-group.mount]]\n\
             \x20 prefix = '/b'\n"
                .into(),
        );
        let at = |p: KeyPath| src.line(&p);
        assert_eq!(at(KeyPath::key("threads")), Some(1));
        assert_eq!(
            at(KeyPath::key("mount").push_index(0).push_key("script")),
            Some(5)
        );
        assert_eq!(
            at(KeyPath::key("process-group")
                .push_index(1)
                .push_key("threads")),
            Some(11)
        );
        assert_eq!(
            at(KeyPath::key("process-group")
                .push_index(1)
                .push_key("mount")
                .push_index(0)
                .push_key("prefix")),
            Some(13)
        );
        assert_eq!(at(KeyPath::key("processes")), None);
    }

    #[test]
    fn suggestions_for_typos() {
        assert_eq!(
            suggestion("threds", &["threads", "processes"]).as_deref(),
            Some("threads")
        );
        assert_eq!(suggestion("zzz", &["threads"]), None);
    }
}
