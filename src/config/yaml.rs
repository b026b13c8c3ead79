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

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::marker::PhantomData;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Expected, Unexpected, Visitor};

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
    fn text(&self) -> Option<&str> {
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
}

/// A map or list being built while parser events arrive; `seen` maps keys to their line.
struct Frame {
    node: Node,
    key: Option<Node>,
    seen: HashMap<String, usize>,
}

impl Document {
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
        Ok(Document { file: file.to_string(), root })
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

/// How a node reads in "found …".
fn describe(node: &Node) -> String {
    match (&node.kind, resolve(node)) {
        (NodeKind::Seq(_), _) => "a list".into(),
        (NodeKind::Map(_), _) => "a map".into(),
        (_, Some(Scalar::Null)) if node.text() == Some("") => "an empty value".into(),
        (_, Some(Scalar::Null)) => "null".into(),
        (_, Some(Scalar::Str(s))) if s.chars().count() > 40 => {
            format!("{:?}…", s.chars().take(40).collect::<String>())
        }
        (_, Some(Scalar::Str(s))) => format!("{s:?}"),
        _ => node.text().unwrap_or_default().to_string(),
    }
}

fn describe_unexpected(u: &Unexpected<'_>) -> String {
    match u {
        Unexpected::Bool(b) => b.to_string(),
        Unexpected::Unsigned(n) => n.to_string(),
        Unexpected::Signed(n) => n.to_string(),
        Unexpected::Float(n) => n.to_string(),
        Unexpected::Char(c) => format!("{:?}", c.to_string()),
        Unexpected::Str(s) => format!("{s:?}"),
        Unexpected::Unit => "null".into(),
        Unexpected::Seq => "a list".into(),
        Unexpected::Map => "a map".into(),
        other => other.to_string(),
    }
}

fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing is allowed here".into(),
        _ => format!("expected one of: {}", names.join(", ")),
    }
}

/// State shared by one deserialization run. Nodes are identified by address.
struct Ctx<'c> {
    file: &'c str,
    errors: RefCell<Vec<ConfigError>>,
    /// Nodes that failed in earlier runs and are skipped in this one.
    poisoned: &'c HashSet<usize>,
    /// Nodes that failed in this run.
    failed: RefCell<Vec<usize>>,
    /// A list element or free-form map entry was skipped in this run.
    dropped: Cell<bool>,
}

fn addr(node: &Node) -> usize {
    node as *const Node as usize
}

/// Serde's error: either already recorded in `Ctx`, or raised by a visitor and not yet located.
#[derive(Debug)]
enum DeError {
    Reported,
    Fresh(String, FreshKind),
}

#[derive(Debug, PartialEq)]
enum FreshKind {
    Missing(&'static str),
    Length,
    /// An untagged enum matched nothing; serde's message names the Rust type, not the value.
    NoVariant,
    Other,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeError::Reported => f.write_str("config error (already reported)"),
            DeError::Fresh(message, _) => f.write_str(message),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let message = msg.to_string();
        match message.starts_with("data did not match any variant") {
            true => DeError::Fresh(message, FreshKind::NoVariant),
            false => DeError::Fresh(message, FreshKind::Other),
        }
    }
    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        let found = describe_unexpected(&unexp);
        Self::custom(format_args!("expected {exp}, found {found}"))
    }
    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        let found = describe_unexpected(&unexp);
        Self::custom(format_args!("invalid value {found}: expected {exp}"))
    }
    fn invalid_length(len: usize, exp: &dyn Expected) -> Self {
        let message = format!("expected {exp}, found {len} items");
        DeError::Fresh(message, FreshKind::Length)
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let expected = one_of(expected);
        Self::custom(format_args!("unknown value `{variant}` ({expected})"))
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format_args!("{UNKNOWN_KEY}{field}` ({})", one_of(expected)))
    }
    fn missing_field(field: &'static str) -> Self {
        DeError::Fresh(format!("missing key `{field}`"), FreshKind::Missing(field))
    }
}

type Fields = Option<&'static [&'static str]>;
type Res<T> = Result<T, DeError>;

/// The deserializer for one node.
struct De<'de, 'c> {
    node: &'de Node,
    path: Vec<PathSeg>,
    ctx: &'c Ctx<'c>,
}

impl<'de, 'c> De<'de, 'c> {
    fn new(node: &'de Node, path: Vec<PathSeg>, ctx: &'c Ctx<'c>) -> Self {
        De { node, path, ctx }
    }

    fn child(&self, node: &'de Node, seg: PathSeg) -> De<'de, 'c> {
        De::new(node, [&self.path[..], &[seg]].concat(), self.ctx)
    }

    fn record(&self, message: String) {
        let at = (self.node.line, self.node.col);
        let e = ConfigError::new(self.ctx.file, at, &self.path, message);
        self.ctx.errors.borrow_mut().push(e);
    }

    /// Records a wrong-type error; `hint` is set when the quoted text would have been right.
    fn mismatch(&self, expected: &str, hint: bool) {
        let found = describe(self.node);
        let hint = if hint { QUOTE_HINT } else { "" };
        self.record(format!("expected {expected}, found {found}{hint}"));
    }

    fn quoted(&self) -> Option<Scalar<'de>> {
        match &self.node.kind {
            NodeKind::Scalar { value, plain: false } => Some(resolve_plain(value)),
            _ => None,
        }
    }

    /// Deserializes this node with `seed`, locating any error the seed raises here.
    fn located<S: DeserializeSeed<'de>>(self, seed: S) -> Res<S::Value> {
        let r = seed.deserialize(De::new(self.node, self.path.clone(), self.ctx));
        self.finish(r, |_| false)
    }

    /// Records a fresh error at this node and marks the node as failed. `quiet` errors are
    /// consequences of something already reported (a substituted default, a skipped child).
    fn finish<T>(&self, r: Res<T>, quiet: impl Fn(&FreshKind) -> bool) -> Res<T> {
        let Err(DeError::Fresh(mut message, kind)) = r else {
            return r;
        };
        if kind == FreshKind::NoVariant {
            let found = describe(self.node);
            message = format!("unexpected value {found}: it matches none of the accepted forms");
        }
        if !quiet(&kind) {
            self.record(message);
        }
        self.fail()
    }

    fn fail<T>(&self) -> Res<T> {
        self.ctx.failed.borrow_mut().push(addr(self.node));
        Err(DeError::Reported)
    }

    fn int(&self, min: i128, max: i128) -> i128 {
        match resolve(self.node) {
            Some(Scalar::Int(Some(n))) if (min..=max).contains(&n) => return n,
            Some(Scalar::Int(Some(n))) if n < 0 && min == 0 => self.mismatch("a non-negative integer", false),
            Some(Scalar::Int(_)) => self.mismatch(&format!("an integer between {min} and {max}"), false),
            _ => self.mismatch("an integer", matches!(self.quoted(), Some(Scalar::Int(_)))),
        }
        0
    }

    fn float(&self) -> f64 {
        match resolve(self.node) {
            Some(Scalar::Float(f)) => return f,
            Some(Scalar::Int(Some(n))) => return n as f64,
            _ => self.mismatch("a number", matches!(self.quoted(), Some(Scalar::Int(_) | Scalar::Float(_)))),
        }
        0.0
    }

    /// Text for string-like targets: any non-null scalar.
    fn string(&self) -> Option<&'de str> {
        let text = self.node.text().filter(|_| !self.node.is_null());
        if text.is_none() {
            self.mismatch("a string", false);
        }
        text
    }

    /// Visits a list; `subst` when it stands in for a value of the wrong type.
    fn seq<V: Visitor<'de>>(&self, items: &'de [Node], v: V, subst: bool) -> Res<V::Value> {
        let mut acc = SeqAcc { de: self, items, idx: 0, skipped: false };
        let r = v.visit_seq(&mut acc);
        self.finish(r, |k| subst || (acc.skipped && *k == FreshKind::Length))
    }

    /// Visits a map, or a struct when `fields` is set; an empty one for null or a wrong type.
    fn map<V: Visitor<'de>>(self, fields: Fields, v: V) -> Res<V::Value> {
        let (entries, subst) = match &self.node.kind {
            NodeKind::Map(entries) => (&entries[..], false),
            _ => (&[][..], !self.node.is_null()),
        };
        if subst {
            self.mismatch("a map", false);
        }
        let mut acc = MapAcc { de: &self, entries, idx: 0, fields, skipped: vec![], value: None };
        let r = v.visit_map(&mut acc);
        let skipped = acc.skipped;
        self.finish(r, |k| subst || matches!(k, FreshKind::Missing(f) if skipped.contains(f)))
    }
}

macro_rules! int_methods {
    ($($method:ident $visit:ident $ty:ty;)*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
            let max = i128::try_from(<$ty>::MAX).unwrap_or(i128::MAX);
            v.$visit(<$ty>::try_from(self.int(<$ty>::MIN as i128, max)).unwrap_or_default())
        }
    )*};
}

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*) => $to:ident($($pass:ident),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* v: V) -> Res<V::Value> {
            self.$to($($pass,)* v)
        }
    )*};
}

// Leaf errors are located by `De::located` in the accessor that created this deserializer.
impl<'de> de::Deserializer<'de> for De<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        match (&self.node.kind, resolve(self.node)) {
            (NodeKind::Seq(items), _) => self.seq(items, v, false),
            (NodeKind::Map(_), _) => self.map(None, v),
            (_, Some(Scalar::Null)) => v.visit_unit(),
            (_, Some(Scalar::Bool(b))) => v.visit_bool(b),
            (_, Some(Scalar::Int(Some(n)))) => match (u64::try_from(n), i64::try_from(n)) {
                (Ok(u), _) => v.visit_u64(u),
                (_, Ok(i)) => v.visit_i64(i),
                _ => v.visit_i128(n),
            },
            (_, Some(Scalar::Float(f))) => v.visit_f64(f),
            _ => v.visit_borrowed_str(self.node.text().unwrap_or_default()),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        if let Some(Scalar::Bool(b)) = resolve(self.node) {
            return v.visit_bool(b);
        }
        self.mismatch("a boolean (true or false)", matches!(self.quoted(), Some(Scalar::Bool(_))));
        v.visit_bool(false)
    }

    int_methods! {
        deserialize_i8 visit_i8 i8; deserialize_i16 visit_i16 i16; deserialize_i32 visit_i32 i32;
        deserialize_i64 visit_i64 i64; deserialize_i128 visit_i128 i128; deserialize_u8 visit_u8 u8;
        deserialize_u16 visit_u16 u16; deserialize_u32 visit_u32 u32; deserialize_u64 visit_u64 u64;
        deserialize_u128 visit_u128 u128;
    }

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        v.visit_f32(self.float() as f32)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        v.visit_f64(self.float())
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        let mut chars = self.string().unwrap_or("x").chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => v.visit_char(c),
            _ => {
                self.mismatch("a single character", false);
                v.visit_char(' ')
            }
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        let s = self.string();
        let r = v.visit_borrowed_str(s.unwrap_or_default());
        self.finish(r, |_| s.is_none())
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        let s = self.string();
        let r = v.visit_borrowed_bytes(s.unwrap_or_default().as_bytes());
        self.finish(r, |_| s.is_none())
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        match self.node.is_null() {
            true => v.visit_none(),
            false => v.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        if !self.node.is_null() {
            self.mismatch("nothing (null)", false);
        }
        v.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Res<V::Value> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        match &self.node.kind {
            NodeKind::Seq(items) => self.seq(items, v, false),
            _ if self.node.is_null() => self.seq(&[], v, false),
            NodeKind::Map(_) => {
                let hint = match self.node.flow {
                    true => "for a list of one, write `[ { … } ]`",
                    false => "start each entry with `- `",
                };
                self.record(format!("expected a list, found a map ({hint})"));
                self.seq(&[], v, true)
            }
            _ => {
                self.mismatch("a list", false);
                self.seq(&[], v, true)
            }
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Res<V::Value> {
        match &self.node.kind {
            NodeKind::Seq(items) if items.len() != len => {
                self.record(format!("expected a list of {len} items, found {} items", items.len()));
                self.seq(items, v, true)
            }
            _ => self.deserialize_seq(v),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Res<V::Value> {
        self.map(Some(fields), v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Res<V::Value> {
        let (tag, value) = match &self.node.kind {
            NodeKind::Scalar { .. } if !self.node.is_null() => (self.node, None),
            NodeKind::Map(e) if e.len() == 1 && e[0].0.text().is_some() => (&e[0].0, Some(&e[0].1)),
            _ => {
                let shape = "(a name, or a map with that name as its only key)";
                self.record(format!("{} {shape}, found {}", one_of(variants), describe(self.node)));
                return self.fail();
            }
        };
        let r = v.visit_enum(EnumAcc { de: &self, tag, value });
        match r {
            // An enum cannot be half-read: skip all of it in the next run.
            Err(DeError::Reported) => self.fail(),
            r => self.finish(r, |_| false),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        match self.node.text() {
            Some(name) => v.visit_borrowed_str(name),
            None => {
                self.mismatch("a name", false);
                self.fail()
            }
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        v.visit_unit()
    }

    forward! {
        deserialize_string() => deserialize_str();
        deserialize_byte_buf() => deserialize_bytes();
        deserialize_unit_struct(_n: &'static str) => deserialize_unit();
        deserialize_tuple_struct(_n: &'static str, len: usize) => deserialize_tuple(len);
        deserialize_map() => map(None);
    }
}

struct SeqAcc<'a, 'de, 'c> {
    de: &'a De<'de, 'c>,
    items: &'de [Node],
    idx: usize,
    skipped: bool,
}

impl<'de> de::SeqAccess<'de> for SeqAcc<'_, 'de, '_> {
    type Error = DeError;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Res<Option<S::Value>> {
        while let Some(item) = self.items.get(self.idx) {
            self.idx += 1;
            if self.de.ctx.poisoned.contains(&addr(item)) {
                self.skipped = true;
                self.de.ctx.dropped.set(true);
                continue;
            }
            return self.de.child(item, PathSeg::Index(self.idx - 1)).located(seed).map(Some);
        }
        Ok(None)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len().saturating_sub(self.idx))
    }
}

struct MapAcc<'a, 'de, 'c> {
    de: &'a De<'de, 'c>,
    entries: &'de [(Node, Node)],
    idx: usize,
    /// The struct's field names; `None` for free-form maps.
    fields: Fields,
    skipped: Vec<&'de str>,
    value: Option<(&'de Node, PathSeg)>,
}

impl<'de> de::MapAccess<'de> for MapAcc<'_, 'de, '_> {
    type Error = DeError;

    fn next_key_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Res<Option<S::Value>> {
        while let Some((key, value)) = self.entries.get(self.idx) {
            self.idx += 1;
            let name = key.text();
            let seg = PathSeg::Key(name.unwrap_or("<complex key>").to_string());
            if [key, value].iter().any(|n| self.de.ctx.poisoned.contains(&addr(n))) {
                self.skipped.extend(name);
                if self.fields.is_none() {
                    self.de.ctx.dropped.set(true);
                }
                continue;
            }
            let key_de = self.de.child(key, seg.clone());
            if let Some(fields) = self.fields {
                match name {
                    Some(n) if fields.contains(&n) => {}
                    Some(n) => key_de.record(format!("{UNKNOWN_KEY}{n}` ({})", one_of(fields))),
                    None => key_de.mismatch("a key name", false),
                }
                if !name.is_some_and(|n| fields.contains(&n)) {
                    continue;
                }
            }
            self.value = Some((value, seg));
            return key_de.located(seed).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Res<S::Value> {
        match self.value.take() {
            Some((value, seg)) => self.de.child(value, seg).located(seed),
            None => Err(de::Error::custom("a map value was requested before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len().saturating_sub(self.idx))
    }
}

/// An externally tagged enum: `name` or `name: value`.
struct EnumAcc<'a, 'de, 'c> {
    de: &'a De<'de, 'c>,
    tag: &'de Node,
    value: Option<&'de Node>,
}

impl<'de, 'c> EnumAcc<'_, 'de, 'c> {
    fn name(&self) -> &'de str {
        self.tag.text().unwrap_or_default()
    }

    fn value_de(&self) -> Result<De<'de, 'c>, DeError> {
        let name = self.name();
        match self.value {
            Some(value) => Ok(self.de.child(value, PathSeg::Key(name.to_string()))),
            None => {
                self.de.record(format!("`{name}` needs a value: write it as `{name}: …`"));
                self.de.fail()
            }
        }
    }
}

impl<'a, 'de, 'c> de::EnumAccess<'de> for EnumAcc<'a, 'de, 'c> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Res<(S::Value, Self)> {
        let tag_de = De::new(self.tag, self.de.path.clone(), self.de.ctx);
        Ok((tag_de.located(seed)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for EnumAcc<'_, 'de, '_> {
    type Error = DeError;

    fn unit_variant(self) -> Res<()> {
        if let Some(value) = self.value.filter(|v| !v.is_null()) {
            let name = self.name();
            let value_de = self.de.child(value, PathSeg::Key(name.to_string()));
            value_de.record(format!("`{name}` takes no value: write just `{name}`"));
        }
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Res<S::Value> {
        self.value_de()?.located(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Res<V::Value> {
        de::Deserializer::deserialize_tuple(self.value_de()?, len, v)
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], v: V) -> Res<V::Value> {
        self.value_de()?.map(Some(fields), v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(dead_code)]
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    struct Gw {
        listen: String,
        #[serde(default)]
        backends: BTreeMap<String, Backend>,
        #[serde(default)]
        routes: Vec<Route>,
    }

    #[derive(Debug, Deserialize)]
    struct Backend {
        servers: Vec<Server>,
        #[serde(default)]
        balance: Balance,
    }

    #[derive(Debug, Deserialize)]
    struct Server {
        url: String,
        #[serde(default)]
        weight: u32,
        tls: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Balance {
        #[default]
        RoundRobin,
        LeastRequest,
    }

    #[derive(Debug, Deserialize)]
    struct Route {
        path: String,
        #[serde(default)]
        plugins: Vec<Plugin>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    enum Plugin {
        Cors,
        RateLimit(u32),
        SetHeader { name: String, value: String },
    }

    fn errors<T: DeserializeOwned + fmt::Debug>(yaml: &str) -> Vec<String> {
        let result = Document::parse("gw.yaml", yaml).and_then(|d| d.deserialize::<T>());
        result.expect_err("expected errors").iter().map(ToString::to_string).collect()
    }

    #[test]
    fn unknown_keys_at_every_depth() {
        let yaml = "listen: ':80'\nlisten_port: 1\nbackends:\n  orders:\n    servers:\n      - url: http://a\n        wieght: 2\n    balanse: x\nroutes:\n  - path: /\n    \"a.b\": 1\n";
        assert_eq!(errors::<Gw>(yaml), [
            "gw.yaml:2:1: listen_port: unknown key `listen_port` (expected one of: listen, backends, routes)",
            "gw.yaml:7:9: backends.orders.servers[0].wieght: unknown key `wieght` (expected one of: url, weight, tls)",
            "gw.yaml:8:5: backends.orders.balanse: unknown key `balanse` (expected one of: servers, balance)",
            "gw.yaml:11:5: routes[0][\"a.b\"]: unknown key `a.b` (expected one of: path, plugins)",
        ]);
    }

    #[test]
    fn type_error_and_unknown_key_in_one_struct() {
        let yaml = "listen: x\nbackends:\n  orders:\n    servers:\n      - url: [1]\n        weight: abc\n        colour: red\n        tls: 'yes'\n";
        assert_eq!(errors::<Gw>(yaml), [
            "gw.yaml:5:14: backends.orders.servers[0].url: expected a string, found a list",
            "gw.yaml:6:17: backends.orders.servers[0].weight: expected an integer, found \"abc\"",
            "gw.yaml:7:9: backends.orders.servers[0].colour: unknown key `colour` (expected one of: url, weight, tls)",
            "gw.yaml:8:14: backends.orders.servers[0].tls: expected a boolean (true or false), found \"yes\"",
        ]);
    }

    #[test]
    fn missing_field_has_path_and_location_of_its_map() {
        let yaml = "listen: x\nbackends:\n  orders:\n    servers:\n      - weight: 1\n  users:\n    servers: []\n    balance: random\n";
        assert_eq!(errors::<Gw>(yaml), [
            "gw.yaml:5:9: backends.orders.servers[0]: missing key `url`",
            "gw.yaml:8:14: backends.users.balance: unknown value `random` (expected one of: round_robin, least_request)",
        ]);
        assert_eq!(errors::<Gw>("backends: {}\n"), ["gw.yaml:1:1: missing key `listen`"]);
    }

    #[test]
    fn a_bad_element_does_not_hide_the_next() {
        let yaml = "listen: x\nroutes:\n  - plugins: [cors]\n  - path: /a\n    plugins:\n      - rate-limit: -1\n      - bogus\n      - set-header: {name: x}\n      - cors: 1\n  - path: 5\n    nope: 1\n";
        assert_eq!(errors::<Gw>(yaml), [
            "gw.yaml:3:5: routes[0]: missing key `path`",
            "gw.yaml:6:21: routes[1].plugins[0].rate-limit: expected a non-negative integer, found -1",
            "gw.yaml:7:9: routes[1].plugins[1]: unknown value `bogus` (expected one of: cors, rate-limit, set-header)",
            "gw.yaml:8:21: routes[1].plugins[2].set-header: missing key `value`",
            "gw.yaml:9:15: routes[1].plugins[3].cors: `cors` takes no value: write just `cors`",
            "gw.yaml:11:5: routes[2].nope: unknown key `nope` (expected one of: path, plugins)",
        ]);
    }

    #[test]
    fn duplicate_keys_and_syntax_errors() {
        let dup = Document::parse("gw.yaml", "a: 1\nb:\n  c: 1\n  c: 2\na: 3\n").expect_err("dup");
        let dup: Vec<String> = dup.iter().map(ToString::to_string).collect();
        assert_eq!(
            dup,
            [
                "gw.yaml:4:3: duplicate key `c` (first defined on line 3)",
                "gw.yaml:5:1: duplicate key `a` (first defined on line 1)",
            ]
        );
        let bad = Document::parse("gw.yaml", "a: 1\nb: [1, 2\nc: 3\n").expect_err("syntax");
        assert_eq!((bad.len(), bad[0].line, bad[0].col), (1, 3, 2));
        let bad = Document::parse("f.yaml", "a: 1\n b: 2\n").expect_err("syntax");
        assert_eq!(bad[0].to_string(), "f.yaml:2:3: mapping values are not allowed in this context");
        for (text, message) in [
            ("a: &x 1\nb: *x\n", "aliases (`*name`) are not supported: write the value out"),
            ("a: 1\n---\nb: 2\n", "only one YAML document is allowed per file"),
            ("a: !secret x\n", "YAML tags such as `!secret` are not supported"),
        ] {
            let e = Document::parse("f.yaml", text).expect_err(text);
            assert_eq!(e[0].message, message);
        }
    }

    #[test]
    fn display_format() {
        let path = [PathSeg::Key("apis".into()), PathSeg::Key("/x.y".into())];
        let mut e = ConfigError::new("gw.yaml", (12, 9), &path, "m".into());
        assert_eq!(e.to_string(), "gw.yaml:12:9: apis[\"/x.y\"]: m");
        e.path.clear();
        assert_eq!(e.to_string(), "gw.yaml:12:9: m");
        let path = [PathSeg::Index(0), PathSeg::Key("a".into()), PathSeg::Key("".into())];
        assert_eq!(format_path(&path), "[0].a[\"\"]");
        // No position (an unreadable file): no fake `:0:0`.
        let mut e = ConfigError::new("gw.yaml", (0, 0), &[], "cannot read the config file".into());
        assert_eq!(e.to_string(), "gw.yaml: cannot read the config file");
        e.path = "apis".into();
        assert_eq!(e.to_string(), "gw.yaml: apis: cannot read the config file");
    }

    #[test]
    fn keys_are_located_at_the_key() {
        let doc = Document::parse("gw.yaml", "a:\n  b:\n    c: 1\nl: [ { k: v } ]\n").expect("parse");
        let key = |k: &str| PathSeg::Key(k.into());
        assert_eq!(doc.locate(&[key("a"), key("b")]), (3, 5));
        assert_eq!(doc.locate_key(&[key("a"), key("b")]), (2, 3));
        assert_eq!(doc.locate_key(&[key("a")]), (1, 1));
        assert_eq!(doc.locate_key(&[key("l"), PathSeg::Index(0), key("k")]), (4, 8));
        // A list element, or no such key: like `locate`.
        assert_eq!(doc.locate_key(&[key("l"), PathSeg::Index(0)]), (4, 6));
        assert_eq!(doc.locate_key(&[key("a"), key("nope")]), (2, 3));
        let e = doc.error_at_key(&[key("a"), key("b")], "m");
        assert_eq!(e.to_string(), "gw.yaml:2:3: a.b: m");
    }

    #[test]
    fn lenient_keeps_what_could_be_read() {
        let yaml = "listen: [x]\nbackends:\n  orders:\n    servers:\n      - url: http://a\n        weight: abc\n    balance: random\n";
        let doc = Document::parse("gw.yaml", yaml).expect("parse");
        let (value, errors) = doc.deserialize_at_lenient::<Gw>(&[]).expect("node");
        let gw = value.expect("only leaf errors and a defaulted field");
        assert_eq!(gw.listen, "");
        let orders = &gw.backends["orders"];
        assert_eq!((orders.servers[0].url.as_str(), orders.servers[0].weight), ("http://a", 0));
        assert_eq!(orders.balance, Balance::RoundRobin);
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors, [
            "gw.yaml:1:9: listen: expected a string, found a list",
            "gw.yaml:6:17: backends.orders.servers[0].weight: expected an integer, found \"abc\"",
            "gw.yaml:7:14: backends.orders.balance: unknown value `random` (expected one of: round_robin, least_request)",
        ]);
        // The strict form gives the same errors and no value.
        assert_eq!(doc.deserialize::<Gw>().expect_err("errors").len(), 3);
        // A dropped list element (or map entry) would shift what follows: no value.
        let yaml = "listen: x\nroutes:\n  - path: /a\n    plugins: [bogus, cors]\n";
        let doc = Document::parse("gw.yaml", yaml).expect("parse");
        let (value, errors) = doc.deserialize_at_lenient::<Gw>(&[]).expect("node");
        assert!(value.is_none());
        assert_eq!(errors.len(), 1, "{errors:?}");
        // A missing required key: no value either.
        let doc = Document::parse("gw.yaml", "backends: {}\n").expect("parse");
        let (value, errors) = doc.deserialize_at_lenient::<Gw>(&[]).expect("node");
        assert!(value.is_none());
        assert_eq!(errors[0].message, "missing key `listen`");
        assert!(doc.deserialize_at_lenient::<Gw>(&[PathSeg::Key("nope".into())]).is_none());
    }

    #[test]
    fn unclosed_brackets_and_list_hints() {
        let message = |text: &str| Document::parse("f", text).expect_err(text)[0].to_string();
        assert_eq!(
            message("l:\n  - { name: main, bind: \"127.0.0.1:8080\"\nbackends:\n  b: 1\n"),
            "f:3:1: invalid indentation (the `{` opened at 2:5 is not closed)"
        );
        assert!(message("l:\n  - { name: main, bind: x\nbackends:\n  c: 1\n")
            .ends_with(" (the `{` opened at 2:5 is not closed)"));
        assert!(message("l: [ a, b\n").ends_with(" (the `[` opened at 1:4 is not closed)"));
        assert!(message("a:\n  - [1, 2\n  - [3]\n").ends_with(" (the `[` opened at 2:5 is not closed)"));
        // A bracket that is closed later, or an error on its own line: no hint.
        for text in ["a: { b: 1 \n  c: 2 }\n", "a: [ { u: x }, { b: 2 ]\n", "a: [\n  { u: x },\n  u: y: z\n]\n"] {
            assert!(!message(text).contains("opened at"), "{text:?}: {}", message(text));
        }
        let yaml = "listen: x\nroutes:\n  path: /\nbackends:\n  b:\n    servers: { url: x }\n";
        assert_eq!(
            errors::<Gw>(yaml),
            [
                "gw.yaml:3:3: routes: expected a list, found a map (start each entry with `- `)",
                "gw.yaml:6:14: backends.b.servers: expected a list, found a map (for a list of one, write `[ { … } ]`)",
            ]
        );
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Scalars {
        s: Vec<String>,
        n: Vec<i64>,
        f: f64,
        b: Vec<bool>,
        o: Vec<Option<u8>>,
        e: Option<String>,
        any: Vec<Any>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(untagged)]
    enum Any {
        Int(u16),
        Name(Balance),
    }

    #[test]
    fn core_schema_scalars() {
        let yaml = "s: [8080, true, 1.50, 'x', ~x]\nn: [0x1F, 0o17, -3, +4]\nf: 2\nb: [True, FALSE]\no: [~, null, 7]\ne:\nany: [503, least_request]\n";
        let doc = Document::parse("f", yaml).expect("parse");
        let v: Scalars = doc.deserialize().expect("valid");
        assert_eq!(v.s, ["8080", "true", "1.50", "x", "~x"]);
        assert_eq!((v.n, v.f, v.b), (vec![31, 15, -3, 4], 2.0, vec![true, false]));
        assert_eq!((v.o, v.e), (vec![None, None, Some(7)], None));
        assert_eq!(v.any, [Any::Int(503), Any::Name(Balance::LeastRequest)]);
        let yaml = "s: 5\nn: ['1', 99999999999999999999, 1.5]\nf: x\nb: [1]\no: [256]\ne: [1]\nany: [x]\n";
        assert_eq!(errors::<Scalars>(yaml), [
            "gw.yaml:1:4: s: expected a list, found 5",
            "gw.yaml:2:5: n[0]: expected an integer, found \"1\" (quoted values are strings: remove the quotes)",
            "gw.yaml:2:10: n[1]: expected an integer between -9223372036854775808 and 9223372036854775807, found 99999999999999999999",
            "gw.yaml:2:32: n[2]: expected an integer, found 1.5",
            "gw.yaml:3:4: f: expected a number, found \"x\"",
            "gw.yaml:4:5: b[0]: expected a boolean (true or false), found 1",
            "gw.yaml:5:5: o[0]: expected an integer between 0 and 255, found 256",
            "gw.yaml:6:4: e: expected a string, found a list",
            "gw.yaml:7:7: any[0]: unexpected value \"x\": it matches none of the accepted forms",
        ]);
    }

    #[test]
    fn sections_one_by_one() {
        let doc = Document::parse("gw.yaml", "backends:\n  a:\n    servers: [{url: x}]\n  b:\n    servers: [{}]\n")
            .expect("parse");
        let entries = doc.map_entries(&[PathSeg::Key("backends".into())]);
        let names: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(doc.deserialize_at::<Backend>(&entries[0].1).is_some_and(|r| r.is_ok()));
        let Some(Err(e)) = doc.deserialize_at::<Backend>(&entries[1].1) else { panic!("b must fail") };
        assert_eq!(e[0].to_string(), "gw.yaml:5:15: backends.b.servers[0]: missing key `url`");
        assert!(doc.deserialize_at::<Backend>(&[PathSeg::Key("nope".into())]).is_none());
        let path = [PathSeg::Key("backends".into()), PathSeg::Key("a".into()), PathSeg::Key("balance".into())];
        assert_eq!(doc.locate(&path), (3, 5));
        assert_eq!(
            doc.error(&path, "unknown backend `x`").to_string(),
            "gw.yaml:3:5: backends.a.balance: unknown backend `x`"
        );
        let empty = Document::parse("e.yaml", "# nothing\n").expect("empty");
        assert_eq!(empty.root().kind, NodeKind::Map(Vec::new()));
    }

    #[test]
    fn wrong_shapes_report_once_and_never_panic() {
        let yaml = "listen: {a: 1}\nbackends: [1]\nroutes:\n  - plugins: 3\n    path: [x]\n";
        assert_eq!(
            errors::<Gw>(yaml),
            [
                "gw.yaml:1:9: listen: expected a string, found a map",
                "gw.yaml:2:11: backends: expected a map, found a list",
                "gw.yaml:4:14: routes[0].plugins: expected a list, found 3",
                "gw.yaml:5:11: routes[0].path: expected a string, found a list",
            ]
        );
        // Arbitrary input must come back as errors, not panics.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let alphabet = b"ab:- \n[]{},'\"&*!|>#?%@`~0x.";
        for _ in 0..2000 {
            let text: String = (0..(seed % 40))
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize] as char
                })
                .collect();
            if let Ok(doc) = Document::parse("f", &text) {
                let _ = doc.deserialize::<Gw>();
                let _ = doc.deserialize::<Scalars>();
            }
        }
    }
}
