//! Where a secret's value comes from: named values in the config, the environment, a directory
//! of files (mounted-secret style). A lookup records which files it consulted so a change to
//! any of them can trigger a reload (see [`super::watch`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::watch::{Sources, Stamp};

/// A secret file larger than this is refused: a secret is a token or a key, not a data file.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone)]
pub enum Provider {
    Env,
    Dir(PathBuf),
}

/// A named value from `secrets.values` after its own `{{secret:…}}` references were resolved.
#[derive(Debug, Clone)]
pub struct Named {
    pub value: String,
    /// `secret: false` values may be echoed in config errors (APIM's plain named values).
    pub secret: bool,
}

/// The answer of one lookup.
pub enum Found {
    Value(String),
    Missing,
    /// The value exists but cannot be read (permissions, size, encoding); the message never holds the value.
    Broken(String),
}

pub struct Lookup<'a> {
    pub values: &'a BTreeMap<String, Named>,
    pub providers: &'a [Provider],
    pub sources: &'a mut Sources,
}

impl Lookup<'_> {
    /// Named values first (the config is explicit about them), then the providers in order.
    pub fn find(&mut self, name: &str) -> Found {
        if let Some(v) = self.values.get(name) {
            return Found::Value(v.value.clone());
        }
        self.in_providers(name)
    }

    /// Providers only: what a named value's own `{{secret:…}}` may refer to (no chains, no cycles).
    pub fn in_providers(&mut self, name: &str) -> Found {
        for p in self.providers {
            match p {
                Provider::Env => {
                    if let Some(v) = env(name) {
                        return Found::Value(v);
                    }
                }
                Provider::Dir(dir) => {
                    if !valid_file_name(name) {
                        continue;
                    }
                    let path = dir.join(name);
                    // Stamp before reading: a change between the two shows as one more reload, never as a missed one.
                    self.sources.record(&path);
                    match read_file(&path) {
                        Ok(Some(v)) => return Found::Value(v),
                        Ok(None) => {}
                        Err(msg) => return Found::Broken(msg),
                    }
                }
            }
        }
        Found::Missing
    }

    /// Where `name` was looked for, for the "not set" message.
    pub fn tried(&self, name: &str) -> String {
        let mut out: Vec<String> = Vec::new();
        for p in self.providers {
            match p {
                Provider::Env if env_name(name) == name => out.push(format!("environment variable `{name}`")),
                Provider::Env => out.push(format!("environment variable `{name}` or `{}`", env_name(name))),
                Provider::Dir(dir) if valid_file_name(name) => out.push(format!("file `{}`", dir.join(name).display())),
                Provider::Dir(_) => {}
            }
        }
        if out.is_empty() {
            "no provider can hold this name".into()
        } else {
            out.join(", ")
        }
    }
}

pub fn env_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().or_else(|| std::env::var(env_name(name)).ok())
}

/// A name that is one plain file inside the directory: no separators, no `..`, no hidden files
/// (Kubernetes keeps its `..data` bookkeeping there).
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0'])
}

/// The file's content with one trailing newline removed (`echo secret > file` writes one);
/// `None` when there is no such file.
fn read_file(path: &Path) -> Result<Option<String>, String> {
    let shown = path.display();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read secret file `{shown}`: {}", io_reason(&e))),
    };
    let mut buf = Vec::new();
    if let Err(e) = file.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf) {
        return Err(format!("cannot read secret file `{shown}`: {}", io_reason(&e)));
    }
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("secret file `{shown}` is larger than {} KiB", MAX_FILE_BYTES / 1024));
    }
    let Ok(mut text) = String::from_utf8(buf) else {
        return Err(format!("secret file `{shown}` is not UTF-8 text"));
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Some(text))
}

/// The error kind only: an OS error message never holds file content, but keep it short.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "it is a directory".into(),
        _ => e.to_string(),
    }
}

impl Stamp {
    pub fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        // `metadata` follows symlinks: a Kubernetes update swaps `..data` and shows as a new inode.
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_trimmed_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a"), "s3cret\n").expect("write");
        std::fs::write(dir.path().join("crlf"), "x\r\n").expect("write");
        std::fs::write(dir.path().join("big"), vec![b'x'; MAX_FILE_BYTES as usize + 1]).expect("write");
        std::fs::write(dir.path().join("bin"), [0xff, 0xfe]).expect("write");
        assert_eq!(read_file(&dir.path().join("a")), Ok(Some("s3cret".into())));
        assert_eq!(read_file(&dir.path().join("crlf")), Ok(Some("x".into())));
        assert_eq!(read_file(&dir.path().join("none")), Ok(None));
        assert!(read_file(&dir.path().join("big")).is_err_and(|e| e.contains("larger")));
        assert!(read_file(&dir.path().join("bin")).is_err_and(|e| e.contains("UTF-8")));
        assert!(read_file(dir.path()).is_err());
    }

    #[test]
    fn names_stay_inside_the_directory() {
        assert!(valid_file_name("admin-token"));
        for bad in ["", "../etc/passwd", "a/b", "..data", ".hidden"] {
            assert!(!valid_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn lookup_order_and_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("from-dir"), "d").expect("write");
        let mut values = BTreeMap::new();
        values.insert("from-dir".to_owned(), Named { value: "v".into(), secret: false });
        let providers = [Provider::Dir(dir.path().to_path_buf())];
        let mut sources = Sources::default();
        let mut l = Lookup { values: &values, providers: &providers, sources: &mut sources };
        assert!(matches!(l.find("from-dir"), Found::Value(v) if v == "v"));
        assert!(matches!(l.in_providers("from-dir"), Found::Value(v) if v == "d"));
        assert!(matches!(l.find("absent"), Found::Missing));
        assert_eq!(sources.len(), 2, "the file read and the file missing are both watched");
    }
}
