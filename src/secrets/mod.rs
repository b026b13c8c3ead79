//! Secrets (Key Vault's role): `{{secret:NAME}}` in any config value, resolved when the config
//! compiles, before deserialization — so every section and policy sees plain values and nothing
//! downstream needs to know where they came from.
//!
//! Where values come from (`secrets:` in the config, see `docs/secrets.md`):
//! - `values:` named values in the config (APIM "named values"); a value may itself refer to a
//!   provider (`"{{secret:ORDERS_SECRET}}"`, like a Key Vault reference) but not to another value;
//! - `providers:` in order — `env` (the name as written, then upper-cased with every character
//!   outside `[A-Z0-9_]` turned into `_`: `admin-token` → `ADMIN_TOKEN`) and `{ dir: PATH }`
//!   (file `PATH/NAME`, mounted-secret style). Without a `secrets:` section: `[ env ]`.
//!
//! Secrets never reach logs or errors: a missing secret is a config error naming where it was
//! looked for, config errors that would echo a resolved value have it replaced by its
//! `{{secret:NAME}}` reference ([`Resolved::redact`]), and policy configs hold credentials in
//! [`Secret`], whose `Debug` prints no value. Rotation: the files read are recorded
//! ([`Sources`]); a [`Watcher`] reports a change and the caller reloads.

mod providers;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::config::yaml::NodeKind;
use crate::config::{ConfigError, Document, PathSeg};
use providers::{Found, Lookup, Named, Provider};
pub use watch::{Sources, Watcher};

const OPEN: &str = "{{secret:";

/// Values shorter than this are not searched for in error messages: replacing every `a` or `on`
/// would garble them, and a 3-character secret protects nothing anyway.
const MIN_REDACTED_LEN: usize = 4;

/// A credential in a typed config: deserializes from a string, never prints its value.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it (a token request, a header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `secrets:` — only its keys are checked here; `providers` and each named value are read on
/// their own so one bad entry does not hide the rest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the fields exist for `deny_unknown_fields`
struct SecretsKeys {
    providers: Option<serde::de::IgnoredAny>,
    values: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirConfig {
    dir: std::path::PathBuf,
}

/// `secrets.values.NAME` long form (APIM's named value; `secret: false` marks a plain setting
/// such as a host name that config errors may show). The short form is a string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedValueFull {
    value: String,
    #[serde(default = "yes")]
    secret: bool,
}

fn yes() -> bool {
    true
}

/// What resolving found: the files to watch and the values to keep out of error messages.
#[derive(Debug, Default)]
pub struct Resolved {
    pub sources: Sources,
    /// (value, name), longest value first.
    redactions: Vec<(String, String)>,
    /// Every scalar that had `{{secret:…}}`: its path and its source with the secret values
    /// passed through [`crate::expr::escape`], for fields that are templates.
    template_sources: Vec<(Vec<PathSeg>, String)>,
}

impl Resolved {
    /// Replaces every resolved secret value in the errors' messages by its `{{secret:NAME}}`.
    pub fn redact(&self, errors: &mut [ConfigError]) {
        for e in errors {
            e.message = self.redact_str(&e.message);
        }
    }

    pub fn redact_str(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (value, name) in &self.redactions {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("{OPEN}{name}}}}}"));
            }
        }
        out
    }

    /// For a template field at `path`: its source with every spliced secret value escaped, so
    /// that a `{` in a secret stays literal and is never parsed (nor quoted in a parse error);
    /// `None` when no secret was spliced there (use the value as it is).
    pub fn template_source(&self, path: &[PathSeg]) -> Option<&str> {
        self.template_sources.iter().find(|(p, _)| p == path).map(|(_, s)| s.as_str())
    }

    fn keep_out(&mut self, name: &str, value: &str, secret: bool) {
        if secret && value.len() >= MIN_REDACTED_LEN && !self.redactions.iter().any(|(v, _)| v == value) {
            self.redactions.push((value.to_owned(), name.to_owned()));
        }
    }
}

fn key(k: &str) -> PathSeg {
    PathSeg::Key(k.to_owned())
}

/// Replaces every `{{secret:NAME}}` in the document's scalars; relative `dir` providers are
/// relative to the working directory. Prefer [`resolve_in`].
pub fn resolve(doc: &mut Document, errors: &mut Vec<ConfigError>) {
    let _ = resolve_in(doc, Path::new(""), errors);
}

/// Replaces every `{{secret:NAME}}` in the document's scalars (outside `secrets:` itself);
/// relative `dir` providers are relative to `base_dir` (the config file's directory).
pub fn resolve_in(doc: &mut Document, base_dir: &Path, errors: &mut Vec<ConfigError>) -> Resolved {
    let mut resolved = Resolved::default();
    let section = [key("secrets")];
    if let Some(Err(e)) = doc.deserialize_at::<SecretsKeys>(&section) {
        errors.extend(e);
    }
    let providers = compile_providers(doc, base_dir, errors);
    let values = [key("secrets"), key("values")];
    if doc.get(&values).is_some_and(|n| !n.is_null() && !matches!(n.kind, NodeKind::Map(_))) {
        errors.push(doc.error(&values, "expected a map of named values such as `{ orders-host: orders.internal }`"));
    }
    let mut named = BTreeMap::new();
    let mut broken = Vec::new();
    {
        let mut lookup = Lookup { values: &BTreeMap::new(), providers: &providers, sources: &mut resolved.sources };
        for (name, mut path) in doc.map_entries(&[key("secrets"), key("values")]) {
            if !valid_name(&name) {
                errors.push(
                    doc.error_at_key(&path, format!("named value `{name}`: use letters, digits, `.`, `-` and `_`")),
                );
                continue;
            }
            let parsed = if doc.get(&path).is_some_and(|n| matches!(n.kind, NodeKind::Map(_))) {
                let full = doc.deserialize_at::<NamedValueFull>(&path);
                path.push(key("value"));
                full.map(|r| r.map(|f| (f.value, f.secret)))
            } else {
                doc.deserialize_at::<String>(&path).map(|r| r.map(|v| (v, true)))
            };
            let (text, secret) = match parsed {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    errors.extend(e);
                    broken.push(name);
                    continue;
                }
                None => continue,
            };
            match substitute(&text, &mut |n| found(lookup.in_providers(n), &lookup, n)) {
                Ok(value) => {
                    // A plain value that pulls a secret in stays secret.
                    let secret = secret || text.contains(OPEN);
                    named.insert(name, Named { value, secret });
                }
                Err(msg) => {
                    errors.push(doc.error(&path, msg));
                    broken.push(name);
                }
            }
        }
    }
    let mut failed = Vec::new();
    let mut seen: Vec<(String, String, bool)> = Vec::new();
    let mut template_sources = Vec::new();
    {
        let mut lookup = Lookup { values: &named, providers: &providers, sources: &mut resolved.sources };
        doc.for_each_scalar_mut(&mut |path, value| {
            if !value.contains(OPEN) || path.first() == Some(&section[0]) {
                return;
            }
            let first = seen.len();
            let result = substitute(value, &mut |n| {
                if broken.iter().any(|b| b == n) {
                    return Err(format!("secret `{n}`: its named value (secrets.values) has an error"));
                }
                let r = found(lookup.find(n), &lookup, n)?;
                let secret = named.get(n).is_none_or(|v| v.secret);
                seen.push((n.to_owned(), r.clone(), secret));
                Ok(r)
            });
            match result {
                Ok(v) => {
                    // The same values again (no second lookup), escaped for template fields.
                    let mut spliced = seen[first..].iter();
                    let escaped = substitute(value, &mut |_| {
                        spliced.next().map(|(_, v, _)| crate::expr::escape(v).into_owned()).ok_or_else(String::new)
                    });
                    if let Ok(escaped) = escaped {
                        template_sources.push((path.to_vec(), escaped));
                    }
                    *value = v;
                }
                Err(msg) => failed.push((path.to_vec(), msg)),
            }
        });
    }
    doc.set_template_sources(template_sources.clone());
    resolved.template_sources = template_sources;
    for (name, value, secret) in &seen {
        resolved.keep_out(name, value, *secret);
    }
    // Named values never referenced still must not show up in errors about the `secrets:` section.
    for (name, v) in &named {
        resolved.keep_out(name, &v.value, v.secret);
    }
    resolved.redactions.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
    for (path, msg) in failed {
        errors.push(doc.error(&path, msg));
    }
    resolved
}

fn found(f: Found, lookup: &Lookup<'_>, name: &str) -> Result<String, String> {
    match f {
        Found::Value(v) => Ok(v),
        Found::Missing => Err(format!("secret `{name}` is not set ({})", lookup.tried(name))),
        Found::Broken(msg) => Err(format!("secret `{name}`: {msg}")),
    }
}

fn compile_providers(doc: &Document, base_dir: &Path, errors: &mut Vec<ConfigError>) -> Vec<Provider> {
    let list = [key("secrets"), key("providers")];
    let Some(node) = doc.get(&list) else {
        return vec![Provider::Env];
    };
    let NodeKind::Seq(items) = &node.kind else {
        errors.push(doc.error(&list, "expected a list of providers such as `[ env, { dir: secrets/ } ]`"));
        return vec![Provider::Env];
    };
    let mut out = Vec::new();
    for i in 0..items.len() {
        let path = [&list[..], &[PathSeg::Index(i)]].concat();
        if doc.get(&path).is_some_and(|n| matches!(n.kind, NodeKind::Map(_))) {
            match doc.deserialize_at::<DirConfig>(&path) {
                Some(Ok(d)) => {
                    let dir = if d.dir.is_absolute() { d.dir } else { base_dir.join(d.dir) };
                    if dir.is_dir() {
                        out.push(Provider::Dir(dir));
                    } else {
                        let at = [&path[..], &[key("dir")]].concat();
                        errors.push(doc.error(&at, format!("`{}` is not a directory", dir.display())));
                    }
                }
                Some(Err(e)) => errors.extend(e),
                None => {}
            }
            continue;
        }
        match doc.deserialize_at::<String>(&path) {
            Some(Ok(n)) if n == "env" => out.push(Provider::Env),
            Some(Ok(n)) => errors
                .push(doc.error(&path, format!("unknown secret provider `{n}` (expected `env` or `{{ dir: PATH }}`)"))),
            Some(Err(e)) => errors.extend(e),
            None => {}
        }
    }
    out
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn substitute(value: &str, get: &mut dyn FnMut(&str) -> Result<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find("}}") else {
            return Err("unterminated `{{secret:` (expected `{{secret:NAME}}`)".into());
        };
        let name = after[..end].trim();
        if name.is_empty() {
            return Err("empty secret name in `{{secret:}}`".into());
        }
        out.push_str(&get(name)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
