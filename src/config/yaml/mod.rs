//! YAML loading for `gatehouse check` and startup: turns the config text into a located node tree
//! and deserializes serde-derived config structs from it while collecting *every* error, each
//! with `FILE:LINE:COL: key.path: message`, instead of stopping at the first one.
//!
//! - Unknown keys are errors, found at every depth without `deny_unknown_fields`: the deserializer
//!   compares map keys with the field list serde hands to `deserialize_struct`.
//! - Plain scalars follow the YAML 1.2 core schema; quoted scalars are always strings. A field
//!   that wants a string also takes a plain number or boolean (`port: 8080` → `"8080"`).
//! - `null` or an empty value stands for an empty list/map where one is expected.
//! - Anchors are allowed but aliases (`*name`) are rejected: an expanded alias would report its
//!   errors at the anchor's location, which is confusing, and it opens the billion-laughs hole.
//! - Tags other than the core schema's are rejected; `!!str` makes a plain scalar a string.
//!
//! Serde aborts a whole `Deserialize` call on an error it cannot recover from (a missing field,
//! an unknown enum value). To keep checking the rest, [`Document::deserialize_at`] runs the
//! deserialization again, skipping the list elements and map entries that failed before, until a
//! run finds no new failure (at most 256 runs). Leaf type errors never abort: a default value is
//! visited instead. Errors come back sorted by position, each reported once.
//! [`Document::deserialize_at_lenient`] also returns the value of that last run when nothing but
//! leaves and defaulted fields failed, so later checks can still look at the rest of it.
//!
//! Not supported: `#[serde(flatten)]` and internally tagged enums (they bypass the field list, so
//! unknown keys inside them go unreported). Untagged enums work but only say that no form matched.
//!
//! This file holds the node tree ([`Node`], [`PathSeg`]), the parser that builds it
//! ([`Document::parse`]), located errors ([`ConfigError`]) and the core-schema scalar rules; `de`
//! holds the serde deserializer that walks the tree and collects errors, `tests` its unit tests.

mod de;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::marker::PhantomData;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use serde::de::DeserializeOwned;

use de::{Ctx, De};

const MAX_DEPTH: usize = 128;
const MAX_PASSES: usize = 256;
const UNKNOWN_KEY: &str = "unknown key `";
const QUOTE_HINT: &str = " (quoted values are strings: remove the quotes)";

/// One YAML node with the 1-based position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub line: usize,
    pub col: usize,
    /// A flow collection (`{ … }` or `[ … ]`) rather than a block one.
    pub flow: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// `~`, `null` or an empty plain value.
    pub fn is_null(&self) -> bool {
        matches!(resolve(self), Some(Scalar::Null))
    }

    /// The child at one path step: a map value by key, or a list element by index.
    pub fn child(&self, seg: &PathSeg) -> Option<&Node> {
        match (&self.kind, seg) {
            (NodeKind::Map(entries), PathSeg::Key(k)) => {
                entries.iter().find(|(key, _)| key.text() == Some(k)).map(|(_, v)| v)
            }
            (NodeKind::Seq(items), PathSeg::Index(i)) => items.get(*i),
            _ => None,
        }
    }
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// Renders `a.b[0].c`; keys that are not identifier-like are quoted: `a["/x.y"]`.
pub fn format_path(path: &[PathSeg]) -> String {
    let mut out = String::new();
    for seg in path {
        let _ = match seg {
            PathSeg::Index(i) => write!(out, "[{i}]"),
            PathSeg::Key(k) if k.is_empty() || !k.chars().all(is_ident_char) => {
                write!(out, "[{k:?}]")
            }
            PathSeg::Key(k) if out.is_empty() => write!(out, "{k}"),
            PathSeg::Key(k) => write!(out, ".{k}"),
        };
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A located config error; `Display` gives `FILE:LINE:COL: PATH: MESSAGE`, or `FILE: PATH: MESSAGE`
/// when it has no position (`line` 0, e.g. the file cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub path: String,
    pub message: String,
}

impl ConfigError {
    /// An unknown key: the rest of its map was read as written, nothing stands in for a value.
    pub fn is_unknown_key(&self) -> bool {
        self.message.starts_with(UNKNOWN_KEY)
    }

    fn new(file: &str, (line, col): (usize, usize), path: &[PathSeg], message: String) -> Self {
        let (file, path) = (file.to_string(), format_path(path));
        ConfigError { file, line, col, path, message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: ", self.file)?,
            line => write!(f, "{}:{}:{}: ", self.file, line, self.col)?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Sorts errors by position and drops exact repeats; use it after merging several batches.
pub fn sort_errors(errors: &mut Vec<ConfigError>) {
    errors.sort_by_key(|e| (e.line, e.col));
    let mut seen = HashSet::new();
    errors.retain(|e| seen.insert((e.line, e.col, e.path.clone(), e.message.clone())));
}

/// A parsed config file.
#[derive(Debug, Clone)]
pub struct Document {
    file: String,
    root: Node,
    /// Template fields that had secrets spliced in, with the secret values escaped (set by
    /// `secrets::resolve_in`): templates are parsed from these, so a `{` in a secret stays text.
    template_sources: Vec<(Vec<PathSeg>, String)>,
}

/// A map or list being built while parser events arrive; `seen` maps keys to their line.
struct Frame {
    node: Node,
    key: Option<Node>,
    seen: HashMap<String, usize>,
}

impl Document {
    /// Records, per scalar path, the source to parse as a template there (see the field).
    pub fn set_template_sources(&mut self, sources: Vec<(Vec<PathSeg>, String)>) {
        self.template_sources = sources;
    }

    /// The source to parse as a template at `path`, when secrets were spliced there.
    pub fn template_source(&self, path: &[PathSeg]) -> Option<&str> {
        self.template_sources.iter().find(|(p, _)| p == path).map(|(_, s)| s.as_str())
    }

    /// Parses one YAML document; an empty file is an empty map.
    pub fn parse(file: &str, text: &str) -> Result<Document, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err = |at, msg: &str| errors.push(ConfigError::new(file, at, &[], msg.into()));
        let (mut stack, mut root) = (Vec::<Frame>::new(), None);
        let lines: Vec<&str> = text.lines().collect();
        for ev in Parser::new_from_str(text) {
            let (ev, span) = match ev {
                Ok(x) => x,
                Err(e) => {
                    let at = (e.marker().line(), e.marker().col() + 1);
                    let hint = unclosed_hint(&lines, at.0);
                    err(at, &format!("{}{hint}", e.info()));
                    break;
                }
            };
            let (line, col) = (span.start.line(), span.start.col() + 1);
            let is_seq = matches!(ev, Event::SequenceStart(..));
            let scalar = |value, plain| Node { kind: NodeKind::Scalar { value, plain }, line, col, flow: false };
            let node = match ev {
                Event::DocumentStart(_) if root.is_some() => {
                    err((line, col), "only one YAML document is allowed per file");
                    break;
                }
                Event::Alias(_) => {
                    err((line, col), "aliases (`*name`) are not supported: write the value out");
                    scalar(String::new(), true)
                }
                Event::Scalar(value, style, _, tag) => {
                    let tag = tag.map(|t| check_tag(&t)).unwrap_or(Ok(false));
                    if let Err(m) = &tag {
                        err((line, col), m);
                    }
                    let plain = style == ScalarStyle::Plain && tag != Ok(true);
                    scalar(value.into_owned(), plain)
                }
                Event::SequenceStart(_, tag) | Event::MappingStart(_, tag) => {
                    if let Some(Err(m)) = tag.map(|t| check_tag(&t)) {
                        err((line, col), &m);
                    }
                    if stack.len() >= MAX_DEPTH {
                        err((line, col), "nesting is too deep");
                        break;
                    }
                    let kind = match is_seq {
                        true => NodeKind::Seq(vec![]),
                        false => NodeKind::Map(vec![]),
                    };
                    let flow = matches!(char_at(&lines, line, col), Some('{' | '['));
                    let (node, seen) = (Node { kind, line, col, flow }, HashMap::new());
                    stack.push(Frame { node, key: None, seen });
                    continue;
                }
                Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                    Some(frame) => frame.node,
                    None => continue,
                },
                _ => continue,
            };
            let Some(frame) = stack.last_mut() else {
                root = Some(node);
                continue;
            };
            match (&mut frame.node.kind, frame.key.take()) {
                (NodeKind::Seq(items), _) => items.push(node),
                (NodeKind::Map(entries), Some(key)) => entries.push((key, node)),
                (_, None) => {
                    let first = node.text().and_then(|k| frame.seen.insert(k.into(), node.line));
                    if let (Some(k), Some(first)) = (node.text(), first) {
                        let msg = format!("duplicate key `{k}` (first defined on line {first})");
                        err((node.line, node.col), &msg);
                    }
                    frame.key = Some(node);
                }
                _ => {}
            }
        }
        if !errors.is_empty() {
            sort_errors(&mut errors);
            return Err(errors);
        }
        let root = match root {
            Some(n) if !n.is_null() => n,
            n => {
                let (line, col) = n.map_or((1, 1), |n| (n.line, n.col));
                Node { kind: NodeKind::Map(Vec::new()), line, col, flow: false }
            }
        };
        Ok(Document { file: file.to_string(), root, template_sources: Vec::new() })
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The node at `path`, if it exists.
    pub fn get(&self, path: &[PathSeg]) -> Option<&Node> {
        path.iter().try_fold(&self.root, |node, seg| node.child(seg))
    }

    /// Deserializes the whole document.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Vec<ConfigError>> {
        self.run(&self.root, &[])
    }

    /// Deserializes the node at `path`; `None` when there is no such node.
    pub fn deserialize_at<T: DeserializeOwned>(&self, path: &[PathSeg]) -> Option<Result<T, Vec<ConfigError>>> {
        Some(self.run(self.get(path)?, path))
    }

    /// Like [`Document::deserialize_at`], but a value that has errors still comes back when
    /// they could be worked around: a leaf of the wrong type holds its type's default (`0`,
    /// `""`, an empty list), and a struct field that failed (an invalid size, an unknown enum
    /// value) holds its serde default. So checks on the rest of the value can still run; they
    /// must skip the paths that have errors, whose values are stand-ins.
    ///
    /// The value is `None` when a required key is missing or failed, or when a list element or
    /// map entry had to be dropped (the indices of what follows would no longer match the file).
    /// The outer `None`: there is no node at `path`.
    pub fn deserialize_at_lenient<T: DeserializeOwned>(
        &self,
        path: &[PathSeg],
    ) -> Option<(Option<T>, Vec<ConfigError>)> {
        Some(self.run_lenient(self.get(path)?, path))
    }

    /// The entries of the map at `path` as (key, path of the value); empty if it is not a map.
    pub fn map_entries(&self, path: &[PathSeg]) -> Vec<(String, Vec<PathSeg>)> {
        let Some(NodeKind::Map(entries)) = self.get(path).map(|n| &n.kind) else {
            return Vec::new();
        };
        let keys = entries.iter().filter_map(|(k, _)| k.text());
        keys.map(|k| (k.to_string(), [path, &[PathSeg::Key(k.into())]].concat())).collect()
    }

    /// Line and column of the node at `path`, or of its nearest existing ancestor.
    pub fn locate(&self, path: &[PathSeg]) -> (usize, usize) {
        let mut node = &self.root;
        for seg in path {
            match node.child(seg) {
                Some(child) => node = child,
                None => break,
            }
        }
        (node.line, node.col)
    }

    /// Line and column of the *key* of the map entry at `path` (`b` in `a: { b: 1 }`); for a
    /// list element, or when there is no such entry, the same as [`Document::locate`].
    pub fn locate_key(&self, path: &[PathSeg]) -> (usize, usize) {
        if let Some((PathSeg::Key(name), parent)) = path.split_last() {
            if let Some(NodeKind::Map(entries)) = self.get(parent).map(|n| &n.kind) {
                if let Some((key, _)) = entries.iter().find(|(k, _)| k.text() == Some(name)) {
                    return (key.line, key.col);
                }
            }
        }
        self.locate(path)
    }

    /// A located error for semantic checks done after deserialization.
    pub fn error(&self, path: &[PathSeg], message: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.file, self.locate(path), path, message.into())
    }

    /// An error about a key itself (unknown, not supported, misplaced): located at the key, as
    /// the deserializer does for unknown keys, not at its value (the next line for a block value).
    pub fn error_at_key(&self, path: &[PathSeg], message: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.file, self.locate_key(path), path, message.into())
    }

    /// Calls `f` with the path and value of every scalar (map keys excluded), letting it rewrite
    /// the value in place; used to resolve `{{secret:NAME}}` before deserialization.
    pub fn for_each_scalar_mut(&mut self, f: &mut dyn FnMut(&[PathSeg], &mut String)) {
        fn walk(node: &mut Node, path: &mut Vec<PathSeg>, f: &mut dyn FnMut(&[PathSeg], &mut String)) {
            match &mut node.kind {
                NodeKind::Scalar { value, .. } => f(path, value),
                NodeKind::Seq(items) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        path.push(PathSeg::Index(i));
                        walk(item, path, f);
                        path.pop();
                    }
                }
                NodeKind::Map(entries) => {
                    for (k, v) in entries.iter_mut() {
                        let key = match &k.kind {
                            NodeKind::Scalar { value, .. } => value.clone(),
                            _ => String::new(),
                        };
                        path.push(PathSeg::Key(key));
                        walk(v, path, f);
                        path.pop();
                    }
                }
            }
        }
        walk(&mut self.root, &mut Vec::new(), f);
    }

    fn run<T: DeserializeOwned>(&self, node: &Node, path: &[PathSeg]) -> Result<T, Vec<ConfigError>> {
        match self.run_lenient(node, path) {
            (Some(v), errors) if errors.is_empty() => Ok(v),
            (_, errors) => Err(errors),
        }
    }

    /// Returns the value of the last run when it succeeded with every list element and map
    /// entry in place, and all errors (never none when the value is `None`).
    fn run_lenient<T: DeserializeOwned>(&self, node: &Node, path: &[PathSeg]) -> (Option<T>, Vec<ConfigError>) {
        let (mut poisoned, mut errors, mut value) = (HashSet::new(), Vec::new(), None);
        for _ in 0..MAX_PASSES {
            let (file, errors_now, failed) = (&self.file, RefCell::default(), RefCell::default());
            let ctx = Ctx { file, errors: errors_now, poisoned: &poisoned, failed, dropped: Cell::new(false) };
            let result = De::new(node, path.to_vec(), &ctx).located(PhantomData::<T>);
            errors.extend(ctx.errors.into_inner());
            let failed = ctx.failed.into_inner();
            match result {
                Ok(v) => {
                    value = (!ctx.dropped.get()).then_some(v);
                    break;
                }
                // Nothing new to skip: another run would fail the same way.
                Err(_) if failed.iter().all(|n| poisoned.contains(n)) => break,
                Err(_) => poisoned.extend(failed),
            }
        }
        if errors.is_empty() && value.is_none() {
            errors.push(self.error(path, "could not be read"));
        }
        sort_errors(&mut errors);
        (value, errors)
    }
}

/// The character at a 1-based line and column (in characters, as the parser counts them).
fn char_at(lines: &[&str], line: usize, col: usize) -> Option<char> {
    lines.get(line.checked_sub(1)?)?.chars().nth(col.checked_sub(1)?)
}

/// For a syntax error after an unclosed `{` or `[`: ` (the `{` opened at 3:5 is not closed)`.
/// The parser reports such an error where it gave up (often as "invalid indentation" on the
/// next key), not at the bracket. Given when the error is on a later line than the bracket that
/// does not continue the collection: the end of the file, or a line indented no deeper than the
/// one with the bracket.
fn unclosed_hint(lines: &[&str], err_line: usize) -> String {
    // The parser may fail before it emits the collection's start, so re-read the lines before
    // the error (the whole file for an error at its end) and see what is still open there.
    let upto = err_line.saturating_sub(1).min(lines.len());
    let text: String = lines[..upto].iter().flat_map(|l| [*l, "\n"]).collect();
    let mut open: Vec<Option<(char, usize, usize)>> = Vec::new();
    for ev in Parser::new_from_str(&text) {
        let Ok((ev, span)) = ev else { break };
        match ev {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                let (line, col) = (span.start.line(), span.start.col() + 1);
                let bracket = char_at(lines, line, col).filter(|c| matches!(c, '{' | '['));
                open.push(bracket.map(|b| (b, line, col)));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                open.pop();
            }
            _ => {}
        }
    }
    let Some((bracket, line, col)) = open.into_iter().rev().flatten().next() else {
        return String::new();
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let moved_on = match lines.get(err_line.wrapping_sub(1)) {
        None => true,
        Some(l) if l.trim().is_empty() => true,
        Some(l) => indent(l) <= lines.get(line - 1).map_or(0, |o| indent(o)),
    };
    match err_line > line && moved_on {
        true => format!(" (the `{bracket}` opened at {line}:{col} is not closed)"),
        false => String::new(),
    }
}

/// Checks a tag; `Ok(true)` means `!!str`.
fn check_tag(tag: &Tag) -> Result<bool, String> {
    let (handle, suffix) = (&tag.handle, &tag.suffix);
    match tag.is_yaml_core_schema() {
        true => Ok(suffix == "str"),
        false => Err(format!("YAML tags such as `{handle}{suffix}` are not supported")),
    }
}

/// A scalar's value under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    /// `None`: integer syntax but too large.
    Int(Option<i128>),
    Float(f64),
    Str(&'a str),
}

fn resolve(node: &Node) -> Option<Scalar<'_>> {
    match &node.kind {
        NodeKind::Scalar { value, plain: true } => Some(resolve_plain(value)),
        NodeKind::Scalar { value, plain: false } => Some(Scalar::Str(value)),
        _ => None,
    }
}

fn resolve_plain(s: &str) -> Scalar<'_> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Scalar::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let int = |digits: &str, radix| {
        let ok = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
        ok.then(|| Scalar::Int(i128::from_str_radix(digits, radix).ok()))
    };
    for (prefix, radix) in [("0x", 16), ("0o", 8)] {
        if let Some(v) = s.strip_prefix(prefix).and_then(|d| int(d, radix)) {
            return v;
        }
    }
    if int(s.strip_prefix(['-', '+']).unwrap_or(s), 10).is_some() {
        return Scalar::Int(s.parse().ok());
    }
    // Only these characters, so Rust's `inf`/`nan` spellings cannot slip through.
    let float_like = s.chars().all(|c| c.is_ascii_digit() || ".eE+-".contains(c));
    match s.parse::<f64>() {
        Ok(f) if float_like && s.contains(|c: char| c.is_ascii_digit()) => Scalar::Float(f),
        _ => Scalar::Str(s),
    }
}
