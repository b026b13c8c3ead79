//! `{{secret:NAME}}` in any config value, resolved when the config compiles.
//!
//! Provider for now: the environment. `NAME` is looked up as written, then upper-cased with
//! every character outside `[A-Z0-9_]` turned into `_` (`admin-token` → `ADMIN_TOKEN`). A
//! missing secret is a config error at the value's location; values are never logged.

use crate::config::{ConfigError, Document};

const OPEN: &str = "{{secret:";

/// Replaces every `{{secret:NAME}}` in the document's scalars.
pub fn resolve(doc: &mut Document, errors: &mut Vec<ConfigError>) {
    let mut missing = Vec::new();
    doc.for_each_scalar_mut(&mut |path, value| {
        if !value.contains(OPEN) {
            return;
        }
        match substitute(value, &|name| lookup(name)) {
            Ok(v) => *value = v,
            Err(msg) => missing.push((path.to_vec(), msg)),
        }
    });
    for (path, msg) in missing {
        errors.push(doc.error(&path, msg));
    }
}

fn env_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

fn lookup(name: &str) -> Option<String> {
    std::env::var(name).ok().or_else(|| std::env::var(env_name(name)).ok())
}

fn substitute(value: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
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
        match get(name) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "secret `{name}` is not set (environment variable `{name}` or `{}`)",
                    env_name(name)
                ))
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_and_reports() {
        let get = |n: &str| (n == "admin-token").then(|| "s3cret".to_owned());
        assert_eq!(substitute("Bearer {{secret:admin-token}}!", &get).as_deref(), Ok("Bearer s3cret!"));
        assert!(substitute("{{secret:nope}}", &get).err().is_some_and(|e| e.contains("NOPE")));
        assert!(substitute("{{secret:x", &get).is_err());
        assert_eq!(env_name("db.pass-word"), "DB_PASS_WORD");
    }
}
