//! Templates: literal text with `{name}` placeholders, for policy values.

use std::borrow::Cow;

use super::lex::{self, column, Tok};
use super::{resolve, Context, Name, Names, Value, MAX_TEMPLATE_LEN};

/// A compiled template such as `"user-{jwt.sub}"` or `"{request.header.X-User ?? 'anon'}"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    repr: Repr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    /// No placeholders: the text with `{{`/`}}` already unescaped.
    Static(Box<str>),
    Parts(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<str>),
    /// `{a ?? b ?? 'default'}`: the first of `names` that is present and not empty, else `default`.
    Slot {
        names: Vec<Name>,
        default: Box<str>,
    },
}

impl Template {
    /// Compiles `src`; the error message names the bad part and its column.
    pub fn parse(src: &str, names: &Names) -> Result<Template, String> {
        if src.len() > MAX_TEMPLATE_LEN {
            return Err(format!("template is {} bytes long; the limit is {MAX_TEMPLATE_LEN}", src.len()));
        }
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut i = 0;
        while let Some(off) = src.get(i..).and_then(|rest| rest.find(['{', '}'])) {
            let at = i + off;
            lit.push_str(src.get(i..at).unwrap_or_default());
            let doubled = src.as_bytes().get(at + 1) == src.as_bytes().get(at);
            if doubled {
                lit.push_str(src.get(at..=at).unwrap_or_default());
                i = at + 2;
            } else if src.as_bytes().get(at) == Some(&b'}') {
                return Err(format!("unmatched `}}` at column {}: write `}}}}` for a literal brace", column(src, at)));
            } else {
                let close = placeholder_end(src, at)?;
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit).into()));
                }
                parts.push(slot(src, at, close, names)?);
                i = close + 1;
            }
        }
        lit.push_str(src.get(i..).unwrap_or_default());
        if parts.is_empty() {
            return Ok(Template { repr: Repr::Static(lit.into()) });
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.into()));
        }
        Ok(Template { repr: Repr::Parts(parts) })
    }

    /// A template that is just `text` (no placeholders, no escaping).
    pub fn literal(text: &str) -> Template {
        Template { repr: Repr::Static(text.into()) }
    }

    /// Renders against `cx`. A missing value renders as the empty string (or the placeholder's
    /// default), a list joined with `,`. A static template is borrowed, and a template that is one
    /// placeholder passes the context's value through, so neither allocates.
    pub fn render<'c>(&'c self, cx: &'c dyn Context) -> Cow<'c, str> {
        let parts = match &self.repr {
            Repr::Static(text) => return Cow::Borrowed(text),
            Repr::Parts(parts) => parts,
        };
        if let [Part::Slot { names, default }] = parts.as_slice() {
            return match first_present(names, cx) {
                Some(v) => v.into_cow(),
                None => Cow::Borrowed(default),
            };
        }
        let guess: usize = parts.iter().map(|p| if let Part::Lit(l) = p { l.len() } else { 16 }).sum();
        let mut out = String::with_capacity(guess);
        for part in parts {
            match part {
                Part::Lit(l) => out.push_str(l),
                Part::Slot { names, default } => match first_present(names, cx) {
                    Some(Value::Str(s)) => out.push_str(&s),
                    Some(Value::List(items)) => {
                        for (n, item) in items.iter().enumerate() {
                            if n > 0 {
                                out.push(',');
                            }
                            out.push_str(item);
                        }
                    }
                    None => out.push_str(default),
                },
            }
        }
        Cow::Owned(out)
    }

    /// True when the template has no placeholders (it always renders the same text).
    pub fn is_static(&self) -> bool {
        matches!(self.repr, Repr::Static(_))
    }

    /// The names the template reads, in order (a name may repeat).
    pub fn names(&self) -> impl Iterator<Item = &Name> {
        let parts: &[Part] = match &self.repr {
            Repr::Static(_) => &[],
            Repr::Parts(parts) => parts,
        };
        parts.iter().flat_map(|p| match p {
            Part::Lit(_) => [].iter(),
            Part::Slot { names, .. } => names.iter(),
        })
    }
}

/// The first name whose value is present and not empty.
fn first_present<'c>(names: &[Name], cx: &'c dyn Context) -> Option<Value<'c>> {
    names.iter().find_map(|n| cx.lookup(n).filter(|v| !v.is_empty()))
}

/// Offset of the `}` that closes the placeholder opened at `open`, skipping quoted defaults.
fn placeholder_end(src: &str, open: usize) -> Result<usize, String> {
    let b = src.as_bytes();
    let mut i = open + 1;
    let mut quote: Option<u8> = None;
    while let Some(&c) = b.get(i) {
        match (quote, c) {
            (Some(_), b'\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(c),
            (None, b'}') => return Ok(i),
            (None, b'{') => {
                return Err(format!(
                    "`{{` inside the placeholder opened at column {}: write `{{{{` for a literal brace",
                    column(src, open)
                ))
            }
            (None, _) => {}
        }
        i += 1;
    }
    match quote {
        Some(_) => Err(format!("unterminated string in the placeholder opened at column {}", column(src, open))),
        None => Err(format!("unterminated `{{` at column {}: write `{{{{` for a literal brace", column(src, open))),
    }
}

/// Parses the placeholder `src[open..=close]`: `name (?? name)* (?? 'literal' | ?? integer)?`.
fn slot(src: &str, open: usize, close: usize, names: &Names) -> Result<Part, String> {
    let tokens = lex::lex(src, open + 1, close)?;
    if tokens.is_empty() {
        return Err(format!(
            "empty placeholder `{{}}` at column {}: write `{{{{}}}}` for literal braces",
            column(src, open)
        ));
    }
    let mut resolved = Vec::new();
    let mut default: Option<Box<str>> = None;
    let mut expect_operand = true;
    for t in &tokens {
        let col = column(src, t.at);
        if default.is_some() {
            return Err(format!("unexpected text at column {col}: the default must be the last thing in `{{…}}`"));
        }
        match (&t.tok, expect_operand) {
            (Tok::Name { path, key }, true) => {
                let name = resolve(path, key.as_deref(), names).map_err(|e| format!("{e} (column {col})"))?;
                resolved.push(name);
            }
            (Tok::Str(s), true) if !resolved.is_empty() => default = Some(s.as_str().into()),
            (Tok::Int(n), true) if !resolved.is_empty() => default = Some(n.to_string().into()),
            (Tok::Coalesce, false) => {}
            (_, true) if resolved.is_empty() => {
                return Err(format!("expected a name at column {col} (e.g. `{{jwt.sub}}`; `{{{{` is a literal brace)"))
            }
            (_, true) => return Err(format!("expected a name or a quoted default after `??` at column {col}")),
            (_, false) => {
                return Err(format!(
                    "unexpected text at column {col}: a placeholder is `{{name}}` or `{{name ?? 'default'}}`"
                ))
            }
        }
        expect_operand = !expect_operand;
    }
    if expect_operand {
        return Err(format!("expected a name or a quoted default after `??` before column {}", column(src, close)));
    }
    Ok(Part::Slot { names: resolved, default: default.unwrap_or_default() })
}
