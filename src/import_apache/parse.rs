//! Reads Apache httpd configuration files the way httpd does, into a tree of directives and
//! sections, each with the file and line it came from.
//!
//! What httpd does at read time is done here too: `\` line continuations, `#` comment lines,
//! `${NAME}` variables (`Define`, then the environment), `Include`/`IncludeOptional` (wildcards in
//! any path component, relative to `ServerRoot`, files in alphabetical order, a directory read
//! whole), `ServerRoot`, and the start-up conditionals `<IfModule>`, `<IfDefine>`, `<IfFile>`,
//! `<IfVersion>`, `<IfDirective>`, `<IfSection>`, whose bodies are kept or dropped. Every other
//! section (`<VirtualHost>`, `<Directory>`, `<Location>`...) stays in the tree for the
//! translation to interpret.
//!
//! `<IfModule>` is true for mod_wsgi (the setup being imported uses it), for every module a
//! `LoadModule` line loaded, and for any module while no `LoadModule` line has been read at all
//! (a lone site file, read without the server's main file).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Where a directive starts: the file and its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: Rc<Path>,
    pub line: usize,
}

/// A directive: its name as written, and its arguments (variables expanded, quotes kept).
#[derive(Debug, Clone)]
pub struct Directive {
    pub name: String,
    pub args: String,
    pub src: Source,
}

impl Directive {
    /// Whether this is directive `name` (httpd's names are case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The directive as written (name and arguments), for comments and messages.
    pub fn text(&self) -> String {
        if self.args.is_empty() {
            self.name.clone()
        } else {
            format!("{} {}", self.name, self.args)
        }
    }

    /// The arguments split into words as httpd does.
    pub fn words(&self) -> Vec<String> {
        words(&self.args)
    }
}

/// A section such as `<VirtualHost *:80>`, with its body.
#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    pub args: String,
    pub src: Source,
    pub body: Vec<Node>,
}

impl Section {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    pub fn text(&self) -> String {
        if self.args.is_empty() {
            format!("<{}>", self.name)
        } else {
            format!("<{} {}>", self.name, self.args)
        }
    }
}

#[derive(Debug, Clone)]
pub enum Node {
    Directive(Directive),
    Section(Section),
}

/// Something the reader could not follow (an Include matching nothing, an unclosed section...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub src: Source,
    pub text: String,
}

/// The tree read from a main file and everything it includes.
#[derive(Debug)]
pub struct Config {
    pub nodes: Vec<Node>,
    pub problems: Vec<Problem>,
    /// ServerRoot as it was at the end of reading.
    pub server_root: PathBuf,
}

/// Looks up a `${NAME}` that no `Define` set (Debian's envvars, the environment).
pub type Env = Box<dyn Fn(&str) -> Option<String>>;

/// How deep Includes may nest (a file including itself stops here).
const MAX_INCLUDE_DEPTH: usize = 32;

/// Start-up sections whose body is kept or dropped while reading.
const CONDITIONALS: &[&str] = &[
    "IfModule",
    "IfDefine",
    "IfFile",
    "IfVersion",
    "IfDirective",
    "IfSection",
];

struct Reader {
    server_root: PathBuf,
    defines: HashMap<String, String>,
    /// Module names from LoadModule lines, normalised (`wsgi`, `proxy_fcgi`...).
    modules: HashSet<String>,
    problems: Vec<Problem>,
    /// Variables already reported as undefined.
    undefined: HashSet<String>,
    /// Variables from outside the files (`envvars`, the environment), looked up after Defines.
    env: Env,
}

/// Reads `main` and its includes. `server_root` defaults to the main file's directory (httpd's
/// compiled-in default, which Debian's apache2.conf relies on, is that directory there).
/// `env` resolves `${NAME}` for names no `Define` set.
pub fn read(main: &Path, server_root: Option<&Path>, env: Env) -> Result<Config, String> {
    let main = absolute(main);
    let text = std::fs::read_to_string(&main).map_err(|e| format!("{}: {e}", main.display()))?;
    let root = match server_root {
        Some(r) => absolute(r),
        None => main.parent().unwrap_or(Path::new("/")).to_path_buf(),
    };
    let mut reader = Reader {
        server_root: root,
        defines: HashMap::new(),
        modules: HashSet::new(),
        problems: Vec::new(),
        undefined: HashSet::new(),
        env,
    };
    let file: Rc<Path> = Rc::from(main.as_path());
    let lines = logical_lines(&text);
    let mut pos = 0;
    let mut nodes = Vec::new();
    reader.block(&file, &lines, &mut pos, None, 0, &mut nodes);
    Ok(Config {
        nodes,
        problems: reader.problems,
        server_root: reader.server_root,
    })
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// A logical line (continuations joined) and the line it starts on.
struct Line {
    text: String,
    number: usize,
}

/// Joins `\`-continued lines. Like httpd, trailing white space before the line end is
/// ignored when looking for the backslash, and a comment line continues too.
fn logical_lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut current: Option<Line> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_end();
        let (piece, continues) = match trimmed.strip_suffix('\\') {
            Some(head) => (head, true),
            None => (trimmed, false),
        };
        match &mut current {
            Some(line) => line.text.push_str(piece),
            None => {
                current = Some(Line {
                    text: piece.to_string(),
                    number: i + 1,
                })
            }
        }
        if !continues {
            out.extend(current.take());
        }
    }
    out.extend(current.take());
    out
}

/// Splits httpd arguments into words: white space separates them; a word that starts with `"`
/// or `'` runs to the matching quote, inside which `\` escapes that quote. Quotes elsewhere
/// are plain characters.
pub fn words(args: &str) -> Vec<String> {
    let mut rest = args;
    let mut out = Vec::new();
    while let Some(w) = next_word(&mut rest) {
        out.push(w);
    }
    out
}

/// The next word of `rest` (see [`words`]), advancing it.
pub fn next_word(rest: &mut &str) -> Option<String> {
    let s = rest.trim_start();
    if s.is_empty() {
        *rest = s;
        return None;
    }
    let mut chars = s.char_indices().peekable();
    let (_, first) = chars.next().expect("not empty");
    if first == '"' || first == '\'' {
        let mut word = String::new();
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                if let Some(&(_, q)) = chars.peek() {
                    if q == first {
                        word.push(q);
                        chars.next();
                        continue;
                    }
                }
                word.push(c);
            } else if c == first {
                *rest = &s[i + c.len_utf8()..];
                return Some(word);
            } else {
                word.push(c);
            }
        }
        *rest = "";
        return Some(word);
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    *rest = &s[end..];
    Some(s[..end].to_string())
}

/// A module name as `<IfModule>` and `LoadModule` write it, reduced to its base:
/// `mod_wsgi.c`, `wsgi_module` and `mod_wsgi` all become `wsgi`.
fn module_base(name: &str) -> String {
    let n = name.trim();
    let n = n.strip_suffix(".c").unwrap_or(n);
    let n = n.strip_suffix(".so").unwrap_or(n);
    let n = n.rsplit('/').next().unwrap_or(n);
    let n = n.strip_prefix("mod_").unwrap_or(n);
    let n = n.strip_suffix("_module").unwrap_or(n);
    n.to_ascii_lowercase()
}

impl Reader {
    fn problem(&mut self, file: &Rc<Path>, line: usize, text: String) {
        self.problems.push(Problem {
            src: Source {
                file: file.clone(),
                line,
            },
            text,
        });
    }

    /// Expands `${NAME}` from Defines, then the outside variables; an undefined one is left as
    /// it is (httpd does the same, with a warning).
    fn expand(&mut self, file: &Rc<Path>, line: usize, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let name = &after[..end];
            let value = self.defines.get(name).cloned().or_else(|| (self.env)(name));
            match value {
                Some(v) => out.push_str(&v),
                None => {
                    out.push_str(&rest[start..start + 2 + end + 1]);
                    if self.undefined.insert(name.to_string()) {
                        self.problem(
                            file,
                            line,
                            format!(
                                "variable ${{{name}}} is not defined (by Define, envvars or the \
                                 environment)"
                            ),
                        );
                    }
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// Reads nodes until the end of `lines` or the close tag of `open` (a section name).
    fn block(
        &mut self,
        file: &Rc<Path>,
        lines: &[Line],
        pos: &mut usize,
        open: Option<(&str, usize)>,
        depth: usize,
        out: &mut Vec<Node>,
    ) {
        while *pos < lines.len() {
            let line = &lines[*pos];
            *pos += 1;
            let number = line.number;
            let text = line.text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let text = self.expand(file, number, text);
            if let Some(close) = text.strip_prefix("</") {
                let name = close.trim_end_matches('>').trim();
                match open {
                    Some((o, _)) if o.eq_ignore_ascii_case(name) => return,
                    Some((o, _)) => self.problem(
                        file,
                        number,
                        format!("</{name}> closes <{o}>; read as its end"),
                    ),
                    None => self.problem(file, number, format!("</{name}> without an opening")),
                }
                if open.is_some() {
                    return;
                }
                continue;
            }
            if let Some(inner) = text.strip_prefix('<') {
                let inner = match inner.rfind('>') {
                    Some(end) => &inner[..end],
                    None => {
                        self.problem(file, number, format!("section {text} lacks its '>'"));
                        inner
                    }
                };
                let (name, args) = split_name(inner);
                let mut body = Vec::new();
                self.block(file, lines, pos, Some((name, number)), depth, &mut body);
                if CONDITIONALS.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                    if self.condition(name, args) {
                        out.extend(body);
                    }
                } else {
                    out.push(Node::Section(Section {
                        name: name.to_string(),
                        args: args.to_string(),
                        src: Source {
                            file: file.clone(),
                            line: number,
                        },
                        body,
                    }));
                }
                continue;
            }
            let (name, args) = split_name(&text);
            let directive = Directive {
                name: name.to_string(),
                args: args.to_string(),
                src: Source {
                    file: file.clone(),
                    line: number,
                },
            };
            self.read_time(directive, depth, out);
        }
        if let Some((name, line)) = open {
            self.problem(
                file,
                line,
                format!("<{name}> is not closed before the end of the file"),
            );
        }
    }

    /// Directives httpd acts on while reading; the others go into the tree.
    fn read_time(&mut self, d: Directive, depth: usize, out: &mut Vec<Node>) {
        let file = d.src.file.clone();
        let line = d.src.line;
        if d.is("ServerRoot") {
            if let Some(root) = d.words().first() {
                self.server_root = PathBuf::from(root);
            }
        } else if d.is("Define") {
            let w = d.words();
            if let Some(name) = w.first() {
                self.defines
                    .insert(name.clone(), w.get(1).cloned().unwrap_or_default());
            }
        } else if d.is("UnDefine") {
            if let Some(name) = d.words().first() {
                self.defines.remove(name);
            }
        } else if d.is("LoadModule") {
            if let Some(module) = d.words().first() {
                self.modules.insert(module_base(module));
            }
        } else if d.is("Include") || d.is("IncludeOptional") {
            let optional = d.is("IncludeOptional");
            let Some(pattern) = d.words().into_iter().next() else {
                self.problem(&file, line, format!("{} without a path", d.name));
                return;
            };
            if depth >= MAX_INCLUDE_DEPTH {
                self.problem(
                    &file,
                    line,
                    format!("{} {pattern}: includes nest too deep (a loop?)", d.name),
                );
                return;
            }
            let path = if Path::new(&pattern).is_absolute() {
                PathBuf::from(&pattern)
            } else {
                self.server_root.join(&pattern)
            };
            let files = expand_include(&path);
            if files.is_empty() && !optional {
                self.problem(
                    &file,
                    line,
                    format!(
                        "Include {pattern}: no file matches {} (httpd would refuse to start)",
                        path.display()
                    ),
                );
            }
            for f in files {
                match std::fs::read_to_string(&f) {
                    Ok(text) => {
                        let inc: Rc<Path> = Rc::from(f.as_path());
                        let lines = logical_lines(&text);
                        let mut pos = 0;
                        self.block(&inc, &lines, &mut pos, None, depth + 1, out);
                    }
                    Err(e) => self.problem(&file, line, format!("{}: {e}", f.display())),
                }
            }
        } else {
            out.push(Node::Directive(d));
        }
    }

    /// Whether a start-up conditional section's body is read.
    fn condition(&self, name: &str, args: &str) -> bool {
        let arg = words(args).into_iter().next().unwrap_or_default();
        let (negated, arg) = match arg.strip_prefix('!') {
            Some(a) => (true, a.to_string()),
            None => (false, arg),
        };
        let holds = if name.eq_ignore_ascii_case("IfModule") {
            let base = module_base(&arg);
            base == "wsgi" || self.modules.is_empty() || self.modules.contains(&base)
        } else if name.eq_ignore_ascii_case("IfDefine") {
            self.defines.contains_key(&arg)
        } else if name.eq_ignore_ascii_case("IfFile") {
            let p = Path::new(&arg);
            if p.is_absolute() {
                p.exists()
            } else {
                self.server_root.join(p).exists()
            }
        } else {
            // IfVersion, IfDirective, IfSection: taken as true.
            return true;
        };
        holds != negated
    }
}

/// `Name rest` → (`Name`, `rest`).
fn split_name(text: &str) -> (&str, &str) {
    let text = text.trim();
    match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim()),
        None => (text, ""),
    }
}

/// The files an Include path names: wildcards (`*`, `?`, `[...]`) in any component, matches
/// sorted; a directory stands for every file under it. Names starting with a dot are matched
/// only by a pattern that starts with a dot.
pub fn expand_include(path: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let comps: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let (start, rest) = match comps.split_first() {
        Some((first, rest)) if first == "/" => (PathBuf::from("/"), rest),
        _ => (PathBuf::from("."), &comps[..]),
    };
    walk_pattern(&start, rest, &mut found);
    let mut files = Vec::new();
    for p in found {
        all_files(&p, &mut files);
    }
    files
}

fn walk_pattern(base: &Path, comps: &[String], found: &mut Vec<PathBuf>) {
    let Some((first, rest)) = comps.split_first() else {
        if base.exists() {
            found.push(base.to_path_buf());
        }
        return;
    };
    if !has_wildcard(first) {
        walk_pattern(&base.join(first), rest, found);
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| fnmatch(first, n))
        .collect();
    names.sort();
    for n in names {
        walk_pattern(&base.join(n), rest, found);
    }
}

/// A file, or every file under a directory (sorted, depth first).
fn all_files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        let Ok(entries) = std::fs::read_dir(p) else {
            return;
        };
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        names.sort();
        for n in names {
            all_files(&n, out);
        }
    } else if p.is_file() {
        out.push(p.to_path_buf());
    }
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Shell-style matching of one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`/`[^x]`,
/// `\` escapes. A leading dot is matched only literally.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| match_from(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && match_from(&p[1..], &n[1..]),
        Some('[') => {
            let Some(c) = n.first() else { return false };
            match class(&p[1..], *c) {
                Some((true, used)) => match_from(&p[1 + used..], &n[1..]),
                Some((false, _)) => false,
                // No closing bracket: a literal '['.
                None => *c == '[' && match_from(&p[1..], &n[1..]),
            }
        }
        Some('\\') if p.len() > 1 => !n.is_empty() && n[0] == p[1] && match_from(&p[2..], &n[1..]),
        Some(c) => !n.is_empty() && n[0] == *c && match_from(&p[1..], &n[1..]),
    }
}

/// Matches `c` against a bracket class starting after `[`; returns (matched, chars used
/// including the closing `]`).
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negated = matches!(p.first(), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negated, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_httpd_quoting() {
        assert_eq!(words(r#"a "b c" 'd e'"#), ["a", "b c", "d e"]);
        assert_eq!(words(r#""say \"hi\"" x"#), ["say \"hi\"", "x"]);
        assert_eq!(words(r#"'it\'s' "a\b""#), ["it's", "a\\b"]);
        assert_eq!(words(r#"key="v w""#), ["key=\"v", "w\""]);
        assert_eq!(words("  "), Vec::<String>::new());
        assert_eq!(words("\"unterminated x"), ["unterminated x"]);
    }

    #[test]
    fn continuations_join_lines_and_comments_continue_too() {
        let lines = logical_lines("A 1 \\\n  2\n# c \\\nB\nC 3\\   \n4\n");
        let got: Vec<(String, usize)> = lines.into_iter().map(|l| (l.text, l.number)).collect();
        assert_eq!(
            got,
            [
                ("A 1   2".to_string(), 1),
                ("# c B".to_string(), 3),
                ("C 34".to_string(), 5)
            ]
        );
    }

    #[test]
    fn fnmatch_classes_and_dots() {
        assert!(fnmatch("*.conf", "site.conf"));
        assert!(!fnmatch("*.conf", ".hidden.conf"));
        assert!(fnmatch(".*.conf", ".hidden.conf"));
        assert!(fnmatch("site-[0-9].conf", "site-3.conf"));
        assert!(!fnmatch("site-[!0-9].conf", "site-3.conf"));
        assert!(fnmatch("a?c", "abc"));
        assert!(!fnmatch("a?c", "ac"));
        assert!(fnmatch("a\\*", "a*"));
        assert!(!fnmatch("a\\*", "ab"));
        assert!(fnmatch("[]x]", "]"));
    }

    #[test]
    fn module_names_reduce_to_one_base() {
        for n in ["mod_wsgi.c", "wsgi_module", "mod_wsgi", "mod_wsgi.so"] {
            assert_eq!(module_base(n), "wsgi");
        }
        assert_eq!(module_base("proxy_fcgi_module"), "proxy_fcgi");
    }
}
