//! The store: subscriptions, quota counters and analytics aggregates that outlive a process (product.md §2 `store:`).
//!
//! An embedded SQLite file by default — created with its tables on first use, so a single node
//! needs no other service — or PostgreSQL (`store.url: postgres://…`) when several nodes share
//! subscriptions. Both speak the same SQL here (`$N` parameters, `ON CONFLICT`, `RETURNING`), so
//! each query is written once and run on whichever pool is open; only the DDL differs (BLOB vs
//! BYTEA), in one migration file per dialect.
//!
//! Nothing on the request path queries the store: the gateway serves subscription checks from
//! `identity::subscription::SubscriptionIndex`, which polls [`Store::changes_since`].
//! Change detection rides on a revision counter: every write bumps `store_meta.rev` in its
//! transaction and stamps the rows it touches with the new value. The counter row is locked by
//! the first write of each transaction, so writers are serialised and revisions become visible
//! in order; a reader that has seen revision N never misses a later one.

mod analytics;
pub mod keys;
mod quota;
mod subscriptions;

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::config::store::StoreConfig;

pub use analytics::StoredAggregate;
pub use keys::{KeyHash, SubscriptionKey};
pub use quota::QuotaCounter;
pub use subscriptions::{IssuedKeys, KeySlot, NewSubscription, Scope, State, Subscription, SubscriptionRecord};

/// Why a store operation failed. Messages never contain keys or database passwords.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused a statement.
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `store:` is unusable as written.
    #[error("store: {0}")]
    Config(String),
    #[error("no subscription `{0}`")]
    NotFound(String),
    /// The operation contradicts the current state (duplicate name or key, resuming a cancelled
    /// subscription).
    #[error("{0}")]
    Conflict(String),
    /// Bad input (a malformed key, an empty name).
    #[error("{0}")]
    Invalid(String),
    #[error("the operating system's random generator failed")]
    Random,
}

impl StoreError {
    /// True for the caller's mistakes (exit code 1, HTTP 4xx), false for runtime failures.
    pub fn is_input_error(&self) -> bool {
        matches!(self, StoreError::NotFound(_) | StoreError::Conflict(_) | StoreError::Invalid(_))
    }
}

/// An open pool on one of the two databases.
#[derive(Clone, Debug)]
enum Db {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool is open. The body is compiled once per
/// database type, so the same query text and row decoding serve both.
macro_rules! with_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Pg($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// A handle on the store; cheap to clone (pools are shared).
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    /// `sqlite` or `postgres`, for messages.
    kind: &'static str,
}

impl Store {
    /// Opens (and creates, for SQLite) the store and applies pending migrations. Relative SQLite
    /// paths are resolved against `base_dir` (the config file's directory).
    pub async fn open(cfg: &StoreConfig, base_dir: &Path) -> Result<Store, StoreError> {
        let url = cfg.url.trim();
        let max = cfg.max_connections.max(1);
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut opts = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL {}: {e}", redact_url(url))))?;
            if let Some(schema) = &cfg.schema {
                check_schema_name(schema)?;
                // The schema must exist before connections point their search_path at it.
                let setup = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts.clone())
                    .await?;
                sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")).execute(&setup).await?;
                setup.close().await;
                opts = opts.options([("search_path", schema.as_str())]);
            }
            let pool =
                PgPoolOptions::new().max_connections(max).acquire_timeout(Duration::from_secs(10)).connect_with(opts);
            Store { db: Db::Pg(pool.await?), kind: "postgres" }
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            if cfg.schema.is_some() {
                return Err(StoreError::Config("`schema` applies to PostgreSQL only".into()));
            }
            let file = rest.strip_prefix("//").unwrap_or(rest);
            let file = file.split('?').next().unwrap_or(file);
            if file.is_empty() || file == ":memory:" {
                return Err(StoreError::Config(
                    "a SQLite store needs a file path (`sqlite://gatehouse.db`); an in-memory store would lose every subscription on restart".into(),
                ));
            }
            let path = base_dir.join(file);
            let opts = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                // WAL: the gateway keeps reading while the CLI (another process) writes.
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new().max_connections(max).connect_with(opts).await?;
            Store { db: Db::Sqlite(pool), kind: "sqlite" }
        } else {
            return Err(StoreError::Config(format!(
                "unsupported store URL {}: use sqlite://PATH or postgres://…",
                redact_url(url)
            )));
        };
        store.migrate().await?;
        Ok(store)
    }

    /// What `gatehouse check` can say about `store:` without connecting: (key under `store`,
    /// message) pairs, empty when it looks usable.
    pub fn check_config(cfg: &StoreConfig) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        let url = cfg.url.trim();
        let pg = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if pg {
            if let Err(e) = PgConnectOptions::from_str(url) {
                errors.push(("url", format!("invalid PostgreSQL URL: {e}")));
            }
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let file = rest.strip_prefix("//").unwrap_or(rest);
            if file.is_empty() || file.starts_with(":memory:") {
                errors.push(("url", "a SQLite store needs a file path (`sqlite://gatehouse.db`)".into()));
            }
        } else {
            errors.push(("url", "use sqlite://PATH or postgres://…".into()));
        }
        match &cfg.schema {
            Some(_) if !pg => errors.push(("schema", "`schema` applies to PostgreSQL only".into())),
            Some(s) => {
                if let Err(StoreError::Config(m)) = check_schema_name(s) {
                    errors.push(("schema", m));
                }
            }
            None => {}
        }
        if cfg.poll_interval.0 < Duration::from_millis(100) {
            errors.push(("poll_interval", "poll at most every 100ms".into()));
        }
        if cfg.max_connections == 0 {
            errors.push(("max_connections", "at least 1".into()));
        }
        errors
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let files: &'static [(i64, &'static str, &'static str)] = match self.db {
            Db::Sqlite(_) => &[
                (1, "init", include_str!("migrations/sqlite/0001_init.sql")),
                (2, "analytics", include_str!("migrations/sqlite/0002_analytics.sql")),
            ],
            Db::Pg(_) => &[
                (1, "init", include_str!("migrations/postgres/0001_init.sql")),
                (2, "analytics", include_str!("migrations/postgres/0002_analytics.sql")),
            ],
        };
        let migrator = Migrator::new(Embedded(files)).await?;
        with_pool!(&self.db, |pool| migrator.run(pool).await?);
        Ok(())
    }

    /// Closes the pool (waits for connections in use to return).
    pub async fn close(&self) {
        with_pool!(&self.db, |pool| pool.close().await)
    }
}

/// Migrations compiled into the binary, so a fresh install needs no files beside it.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> futures_util::future::BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        let list = self
            .0
            .iter()
            .map(|(v, desc, sql)| {
                Migration::new(*v, Cow::Borrowed(*desc), MigrationType::Simple, Cow::Borrowed(*sql), false)
            })
            .collect();
        Box::pin(std::future::ready(Ok(list)))
    }
}

/// A schema name is interpolated into DDL, so only plain identifiers are accepted.
fn check_schema_name(s: &str) -> Result<(), StoreError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Config(format!("invalid schema name {s:?}: use lowercase letters, digits and _")))
    }
}

/// The URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

/// Seconds since the Unix epoch (the store's time unit).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn config_is_checked_without_connecting() {
        let ok = StoreConfig::default();
        assert!(Store::check_config(&ok).is_empty());
        let bad = StoreConfig {
            url: "mysql://x".into(),
            schema: Some("s".into()),
            poll_interval: crate::config::Duration(Duration::from_millis(10)),
            max_connections: 0,
        };
        let keys: Vec<&str> = Store::check_config(&bad).iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["url", "schema", "poll_interval", "max_connections"]);
        let pg = StoreConfig { url: "postgres://u@h/db".into(), schema: Some("Bad".into()), ..StoreConfig::default() };
        assert_eq!(Store::check_config(&pg).len(), 1);
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("gatehouse_1").is_ok());
        assert!(check_schema_name("x\"; DROP").is_err());
        assert!(check_schema_name("").is_err());
    }
}
