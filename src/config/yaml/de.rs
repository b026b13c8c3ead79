//! The serde deserializer over a [`Node`] tree: it reports every error it meets into a shared
//! [`Ctx`] (located, with its key path) instead of stopping at the first, substitutes defaults for
//! leaves of the wrong type, and skips the nodes that failed in an earlier run (see
//! [`Document::deserialize_at`](super::Document::deserialize_at)).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Expected, Unexpected, Visitor};

use super::{resolve, resolve_plain, ConfigError, Node, NodeKind, PathSeg, Scalar, QUOTE_HINT, UNKNOWN_KEY};

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
pub(super) struct Ctx<'c> {
    pub(super) file: &'c str,
    pub(super) errors: RefCell<Vec<ConfigError>>,
    /// Nodes that failed in earlier runs and are skipped in this one.
    pub(super) poisoned: &'c HashSet<usize>,
    /// Nodes that failed in this run.
    pub(super) failed: RefCell<Vec<usize>>,
    /// A list element or free-form map entry was skipped in this run.
    pub(super) dropped: Cell<bool>,
}

fn addr(node: &Node) -> usize {
    node as *const Node as usize
}

/// Serde's error: either already recorded in `Ctx`, or raised by a visitor and not yet located.
#[derive(Debug)]
pub(super) enum DeError {
    Reported,
    Fresh(String, FreshKind),
}

#[derive(Debug, PartialEq)]
pub(super) enum FreshKind {
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
pub(super) struct De<'de, 'c> {
    node: &'de Node,
    path: Vec<PathSeg>,
    ctx: &'c Ctx<'c>,
}

impl<'de, 'c> De<'de, 'c> {
    pub(super) fn new(node: &'de Node, path: Vec<PathSeg>, ctx: &'c Ctx<'c>) -> Self {
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
    pub(super) fn located<S: DeserializeSeed<'de>>(self, seed: S) -> Res<S::Value> {
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
