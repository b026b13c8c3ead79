//! `edge.compression` and `apis.NAME.compression`: the YAML form, its defaults, and compiling
//! both into the [`Table`] a snapshot keeps.
//!
//! Both keys take `true`, `false` or a block. A block's omitted keys come from `edge.compression`
//! (as nginx's gzip directives inherit from the enclosing level), then from the defaults here.
//! The keys are read from the document by [`compile`] rather than by the section structs, which
//! only reserve the name: a key that is a boolean *or* a map would otherwise need an untagged
//! enum, which cannot report unknown keys inside the map.

use std::sync::Arc;

use serde::Deserialize;

use crate::config::yaml::NodeKind;
use crate::config::{ByteSize, ConfigError, Document, PathSeg};

/// A compression block as written.
#[derive(Debug, Default, Deserialize)]
pub struct CompressionConfig {
    /// `br`, `gzip`: the server's order of preference among the codings a client accepts equally.
    pub algorithms: Option<Vec<String>>,
    /// Responses whose length is known and smaller are sent as they are.
    pub min_size: Option<ByteSize>,
    /// Media types (without parameters) that are compressed; `text/*` ends in a wildcard.
    pub types: Option<Vec<String>>,
    #[serde(default)]
    pub level: LevelConfig,
}

/// `level: { gzip: 1..=9, br: 0..=11 }`.
#[derive(Debug, Default, Deserialize)]
pub struct LevelConfig {
    pub gzip: Option<u32>,
    pub br: Option<u32>,
}

/// A content coding the gateway can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Br,
    Gzip,
}

impl Coding {
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// One entry of `types`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypePattern {
    Exact(Box<str>),
    /// `text/*` → `text/`; `application/vnd.foo*` → `application/vnd.foo`.
    Prefix(Box<str>),
}

impl TypePattern {
    /// Whether the media type `t` (no parameters, any case) matches.
    pub fn matches(&self, t: &str) -> bool {
        match self {
            TypePattern::Exact(p) => t.eq_ignore_ascii_case(p),
            TypePattern::Prefix(p) => {
                t.len() >= p.len() && t.is_char_boundary(p.len()) && t[..p.len()].eq_ignore_ascii_case(p)
            }
        }
    }
}

/// Compression settings in force for a response, compiled and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub codings: Vec<Coding>,
    pub min_size: u64,
    pub types: Vec<TypePattern>,
    pub gzip_level: u32,
    pub br_level: u32,
}

pub const DEFAULT_MIN_SIZE: u64 = 1024;
/// zlib's own default: most of level 9's ratio at a fraction of its time.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
/// Brotli's quick levels beat gzip 6 on size at a similar speed; 5 and up cost much more CPU
/// per byte, which a gateway compressing on the fly pays on every response.
pub const DEFAULT_BR_LEVEL: u32 = 4;
/// Textual types that compress well; images, video and archives are compressed already.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "text/csv",
    "text/xml",
    "text/javascript",
    "text/markdown",
    "text/event-stream",
    "application/json",
    "application/problem+json",
    "application/ld+json",
    "application/javascript",
    "application/xml",
    "application/atom+xml",
    "application/rss+xml",
    "application/wasm",
    "image/svg+xml",
];

/// The compression settings of a snapshot: the edge's, and those of the APIs that differ.
#[derive(Debug, Default)]
pub struct Table {
    edge: Option<Arc<Spec>>,
    /// APIs with their own `compression` key; the others use `edge`. Few, so a list.
    apis: Vec<(Box<str>, Option<Arc<Spec>>)>,
    any: bool,
}

impl Table {
    /// Whether any response could be compressed: when not, requests pay nothing more.
    #[inline]
    pub fn any(&self) -> bool {
        self.any
    }

    /// The settings for a response of API `api` (`None`: the request matched no API).
    pub fn for_api(&self, api: Option<&str>) -> Option<&Spec> {
        if let Some(name) = api {
            if let Some((_, spec)) = self.apis.iter().find(|(n, _)| **n == *name) {
                return spec.as_deref();
            }
        }
        self.edge.as_deref()
    }
}

/// One block's keys, validated; `None` where the block leaves a key to its parent.
#[derive(Debug, Default, Clone)]
struct Parsed {
    codings: Option<Vec<Coding>>,
    min_size: Option<u64>,
    types: Option<Vec<TypePattern>>,
    gzip: Option<u32>,
    br: Option<u32>,
}

impl Parsed {
    /// `self` over `parent`, then the defaults.
    fn resolve(&self, parent: &Parsed) -> Spec {
        Spec {
            codings: self.codings.clone().or_else(|| parent.codings.clone()).unwrap_or(vec![Coding::Br, Coding::Gzip]),
            min_size: self.min_size.or(parent.min_size).unwrap_or(DEFAULT_MIN_SIZE),
            types: self
                .types
                .clone()
                .or_else(|| parent.types.clone())
                .unwrap_or_else(|| DEFAULT_TYPES.iter().map(|t| TypePattern::Exact((*t).into())).collect()),
            gzip_level: self.gzip.or(parent.gzip).unwrap_or(DEFAULT_GZIP_LEVEL),
            br_level: self.br.or(parent.br).unwrap_or(DEFAULT_BR_LEVEL),
        }
    }
}

enum Setting {
    Off,
    On,
    Block(Parsed),
}

fn key(k: &str) -> PathSeg {
    PathSeg::Key(k.to_owned())
}

fn at(base: &[PathSeg], more: &[PathSeg]) -> Vec<PathSeg> {
    let mut v = base.to_vec();
    v.extend_from_slice(more);
    v
}

/// Reads `edge.compression` and every `apis.NAME.compression`; errors are located.
pub fn compile(doc: &Document, errors: &mut Vec<ConfigError>) -> Table {
    let edge_path = [key("edge"), key("compression")];
    let (edge, edge_keys) = match read(doc, &edge_path, errors) {
        None | Some(Setting::Off) => (None, Parsed::default()),
        Some(Setting::On) => (Some(Arc::new(Parsed::default().resolve(&Parsed::default()))), Parsed::default()),
        Some(Setting::Block(p)) => (Some(Arc::new(p.resolve(&Parsed::default()))), p),
    };
    let mut apis = Vec::new();
    for (name, path) in doc.map_entries(&[key("apis")]) {
        let spec = match read(doc, &at(&path, &[key("compression")]), errors) {
            None => continue,
            Some(Setting::Off) => None,
            Some(Setting::On) => Some(edge.clone().unwrap_or_else(|| Arc::new(edge_keys.resolve(&Parsed::default())))),
            Some(Setting::Block(p)) => Some(Arc::new(p.resolve(&edge_keys))),
        };
        apis.push((name.into_boxed_str(), spec));
    }
    let any = edge.is_some() || apis.iter().any(|(_, s)| s.is_some());
    Table { edge, apis, any }
}

fn read(doc: &Document, path: &[PathSeg], errors: &mut Vec<ConfigError>) -> Option<Setting> {
    let node = doc.get(path)?;
    if let NodeKind::Scalar { value, plain } = &node.kind {
        if !node.is_null() {
            return match (value.as_str(), plain) {
                ("true", true) => Some(Setting::On),
                ("false", true) => Some(Setting::Off),
                _ => {
                    errors.push(doc.error(
                        path,
                        format!("expected true, false or a map (algorithms, min_size, types, level), found {value:?}"),
                    ));
                    None
                }
            };
        }
    }
    // A null value (`compression:`) reads as an empty block: on, with the defaults.
    let (value, e) = doc.deserialize_at_lenient::<CompressionConfig>(path)?;
    let broken: Vec<String> = e.iter().map(|e| e.path.clone()).collect();
    errors.extend(e);
    let cfg = value?;
    let mut bad = |p: Vec<PathSeg>, msg: String| {
        let e = doc.error(&p, msg);
        // A stand-in value left by a reading error is not judged again.
        if !broken.iter().any(|b| e.path.starts_with(b.as_str())) {
            errors.push(e);
        }
    };
    let mut parsed = Parsed::default();
    if let Some(list) = &cfg.algorithms {
        let mut codings = Vec::new();
        if list.is_empty() {
            bad(at(path, &[key("algorithms")]), "the list is empty: to turn compression off, write `false`".into());
        }
        for (i, a) in list.iter().enumerate() {
            let p = at(path, &[key("algorithms"), PathSeg::Index(i)]);
            let coding = match a.to_ascii_lowercase().as_str() {
                "br" | "brotli" => Coding::Br,
                "gzip" => Coding::Gzip,
                _ => {
                    bad(p, format!("unknown algorithm `{a}` (supported: br, gzip)"));
                    continue;
                }
            };
            if codings.contains(&coding) {
                bad(p, format!("`{}` is listed twice", coding.as_str()));
            } else {
                codings.push(coding);
            }
        }
        parsed.codings = Some(codings);
    }
    parsed.min_size = cfg.min_size.map(|s| s.0);
    if let Some(list) = &cfg.types {
        if list.is_empty() {
            bad(at(path, &[key("types")]), "the list is empty: to turn compression off, write `false`".into());
        }
        let mut types = Vec::new();
        for (i, t) in list.iter().enumerate() {
            match type_pattern(t) {
                Ok(p) => types.push(p),
                Err(msg) => bad(at(path, &[key("types"), PathSeg::Index(i)]), msg),
            }
        }
        parsed.types = Some(types);
    }
    if let Some(l) = cfg.level.gzip {
        if !(1..=9).contains(&l) {
            bad(at(path, &[key("level"), key("gzip")]), "the gzip level must be between 1 and 9".into());
        }
        parsed.gzip = Some(l);
    }
    if let Some(l) = cfg.level.br {
        if l > 11 {
            bad(at(path, &[key("level"), key("br")]), "the br level must be between 0 and 11".into());
        }
        parsed.br = Some(l);
    }
    Some(Setting::Block(parsed))
}

/// `type/subtype`, or a prefix ending in `*` after the slash (`text/*`, `application/vnd.*`).
fn type_pattern(t: &str) -> Result<TypePattern, String> {
    let s = t.trim().to_ascii_lowercase();
    if s.contains(';') {
        return Err(format!("`{t}`: write the media type without parameters (they are ignored when matching)"));
    }
    let shape = || format!("`{t}` is not a media type such as text/html or text/*");
    let (ty, sub) = s.split_once('/').ok_or_else(shape)?;
    let token = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&c));
    if !token(ty) {
        return Err(shape());
    }
    match sub.strip_suffix('*') {
        Some(prefix) if prefix.is_empty() || token(prefix) => {
            Ok(TypePattern::Prefix(format!("{ty}/{prefix}").into_boxed_str()))
        }
        None if token(sub) => Ok(TypePattern::Exact(s.into_boxed_str())),
        _ => Err(shape()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_yaml(yaml: &str) -> (Table, Vec<String>) {
        let doc = Document::parse("gw.yaml", yaml).expect("yaml");
        let mut errors = Vec::new();
        let t = compile(&doc, &mut errors);
        (t, errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn absent_is_off_and_costs_nothing() {
        let (t, e) = compile_yaml("edge: { limits: {} }\napis: { a: { path: /a } }\n");
        assert!(e.is_empty(), "{e:?}");
        assert!(!t.any());
        assert_eq!(t.for_api(Some("a")), None);
    }

    #[test]
    fn defaults_fill_omitted_keys() {
        let (t, e) = compile_yaml("edge:\n  compression: { min_size: 4KiB }\n");
        assert!(e.is_empty(), "{e:?}");
        let s = t.for_api(None).expect("on");
        assert_eq!(s.codings, [Coding::Br, Coding::Gzip]);
        assert_eq!(s.min_size, 4096);
        assert_eq!((s.gzip_level, s.br_level), (DEFAULT_GZIP_LEVEL, DEFAULT_BR_LEVEL));
        assert!(s.types.contains(&TypePattern::Exact("application/json".into())));
        // `compression:` with nothing (null) and `true` both mean the defaults.
        let (t, _) = compile_yaml("edge:\n  compression:\n");
        assert_eq!(t.for_api(None).map(|s| s.min_size), Some(DEFAULT_MIN_SIZE));
        let (t, _) = compile_yaml("edge:\n  compression: true\n");
        assert!(t.any());
    }

    #[test]
    fn apis_switch_off_inherit_or_override_per_key() {
        let yaml = "edge:\n  compression: { algorithms: [gzip], min_size: 10 }\n\
                    apis:\n  off: { path: /o, compression: false }\n  same: { path: /s }\n  \
                    on: { path: /on, compression: true }\n  own: { path: /w, compression: { types: [text/*] } }\n";
        let (t, e) = compile_yaml(yaml);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(t.for_api(Some("off")), None);
        assert_eq!(t.for_api(Some("same")), t.for_api(None));
        assert_eq!(t.for_api(Some("on")), t.for_api(None));
        let own = t.for_api(Some("own")).expect("own");
        assert_eq!(own.codings, [Coding::Gzip], "inherited from the edge");
        assert_eq!(own.min_size, 10);
        assert_eq!(own.types, [TypePattern::Prefix("text/".into())]);
        // An API can turn it on where the edge does not.
        let (t, _) = compile_yaml("apis:\n  a: { path: /a, compression: { level: { gzip: 9 } } }\n");
        assert!(t.any());
        assert_eq!(t.for_api(None), None);
        assert_eq!(t.for_api(Some("a")).map(|s| s.gzip_level), Some(9));
    }

    #[test]
    fn errors_are_located() {
        let yaml = "edge:\n  compression:\n    algorithms: [br, deflate, br]\n    min_size: lots\n    \
                    types: [text/html, \"text/html; charset=utf-8\", html, \"*/*\"]\n    level: { gzip: 0, br: 12 }\n    \
                    colour: red\napis:\n  a: { path: /a, compression: yes }\n  b: { path: /b, compression: [gzip] }\n";
        let (_, e) = compile_yaml(yaml);
        let want = [
            "gw.yaml:3:22: edge.compression.algorithms[1]: unknown algorithm `deflate` (supported: br, gzip)",
            "gw.yaml:3:31: edge.compression.algorithms[2]: `br` is listed twice",
            "gw.yaml:4:15: edge.compression.min_size: invalid size \"lots\": use a number with B, KiB, MiB, GiB, KB, MB, \
             GB, k, m or g, e.g. \"10MiB\"",
            "gw.yaml:5:24: edge.compression.types[1]: `text/html; charset=utf-8`: write the media type without \
             parameters (they are ignored when matching)",
            "gw.yaml:5:52: edge.compression.types[2]: `html` is not a media type such as text/html or text/*",
            "gw.yaml:5:58: edge.compression.types[3]: `*/*` is not a media type such as text/html or text/*",
            "gw.yaml:6:20: edge.compression.level.gzip: the gzip level must be between 1 and 9",
            "gw.yaml:6:27: edge.compression.level.br: the br level must be between 0 and 11",
            "gw.yaml:7:5: edge.compression.colour: unknown key `colour` (expected one of: algorithms, min_size, \
             types, level)",
            "gw.yaml:9:31: apis.a.compression: expected true, false or a map (algorithms, min_size, types, level), \
             found \"yes\"",
            "gw.yaml:10:31: apis.b.compression: expected a map, found a list",
        ];
        let mut e = e;
        e.sort_by_key(|s| {
            let mut it = s.split(':').skip(1).map(|n| n.parse::<usize>().unwrap_or(0));
            (it.next(), it.next())
        });
        assert_eq!(e, want);
    }

    #[test]
    fn type_patterns() {
        assert_eq!(type_pattern("Text/HTML"), Ok(TypePattern::Exact("text/html".into())));
        assert_eq!(type_pattern("text/*"), Ok(TypePattern::Prefix("text/".into())));
        assert_eq!(type_pattern("application/vnd.api*"), Ok(TypePattern::Prefix("application/vnd.api".into())));
        assert!(type_pattern("text/ht*ml").is_err());
        assert!(type_pattern("text").is_err());
        assert!(type_pattern("/html").is_err());
        let p = TypePattern::Prefix("text/".into());
        assert!(p.matches("TEXT/plain") && p.matches("text/") && !p.matches("texts/x") && !p.matches("tex"));
        assert!(TypePattern::Exact("application/json".into()).matches("Application/JSON"));
        assert!(!TypePattern::Exact("application/json".into()).matches("application/json-seq"));
    }
}
