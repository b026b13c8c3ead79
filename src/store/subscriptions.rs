//! Subscriptions in the store: the model (scope, state, expiry, two key digests) and the
//! operations behind `gatehouse subscription …` and the admin API.
//!
//! Every write runs in one transaction that first bumps the revision counter (see the module doc
//! of `store`). Taking that write lock first also keeps SQLite from failing a transaction that
//! read before it wrote while another process (the CLI) was writing.

use std::fmt;

use rand::TryRngCore;
use serde::Serialize;
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::keys::{KeyHash, SubscriptionKey};
use super::{unix_now, with_pool, Store, StoreError};

/// What a subscription gives access to (APIM: product, single API, or all APIs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Product(String),
    Api(String),
    AllApis,
}

impl Scope {
    fn to_columns(&self) -> (&'static str, Option<&str>) {
        match self {
            Scope::Product(p) => ("product", Some(p)),
            Scope::Api(a) => ("api", Some(a)),
            Scope::AllApis => ("all", None),
        }
    }

    fn from_columns(kind: &str, target: Option<String>) -> Result<Scope, StoreError> {
        match (kind, target) {
            ("product", Some(t)) => Ok(Scope::Product(t)),
            ("api", Some(t)) => Ok(Scope::Api(t)),
            ("all", _) => Ok(Scope::AllApis),
            _ => Err(StoreError::Invalid(format!("corrupt subscription scope `{kind}` in the store"))),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Product(p) => write!(f, "product:{p}"),
            Scope::Api(a) => write!(f, "api:{a}"),
            Scope::AllApis => f.write_str("all-apis"),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Lifecycle state. Expiry is separate (`expires_at`): an active subscription past its expiry
/// is refused like a suspended one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Active,
    Suspended,
    /// Final: a cancelled subscription cannot be resumed or get new keys.
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Suspended => "suspended",
            State::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Result<State, StoreError> {
        match s {
            "active" => Ok(State::Active),
            "suspended" => Ok(State::Suspended),
            "cancelled" => Ok(State::Cancelled),
            _ => Err(StoreError::Invalid(format!("corrupt subscription state `{s}` in the store"))),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subscription as shown to operators: never with its keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub state: State,
    /// Unix seconds; `None` = never expires.
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A subscription with its key digests and revision, as the index loads it.
#[derive(Debug, Clone)]
pub struct SubscriptionRecord {
    pub subscription: Subscription,
    pub primary: KeyHash,
    pub secondary: KeyHash,
    pub rev: i64,
}

/// Input of [`Store::create_subscription`]; keys are generated when not given.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub name: String,
    pub scope: Scope,
    pub primary_key: Option<SubscriptionKey>,
    pub secondary_key: Option<SubscriptionKey>,
    pub expires_at: Option<i64>,
}

/// Keys in clear, returned once by create: only the generated ones (a key the operator supplied
/// is not echoed back).
#[derive(Debug)]
pub struct IssuedKeys {
    pub primary: Option<SubscriptionKey>,
    pub secondary: Option<SubscriptionKey>,
}

/// Which of the two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySlot {
    Primary,
    Secondary,
}

impl KeySlot {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySlot::Primary => "primary",
            KeySlot::Secondary => "secondary",
        }
    }
}

const COLUMNS: &str =
    "id, name, scope_kind, scope_target, state, primary_hash, secondary_hash, expires_at, created_at, updated_at, rev";

fn record_from_row<'r, R>(row: &'r R) -> Result<SubscriptionRecord, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let kind: String = row.try_get("scope_kind")?;
    let target: Option<String> = row.try_get("scope_target")?;
    let state: String = row.try_get("state")?;
    let digest = |col: &'static str| -> Result<KeyHash, StoreError> {
        let bytes: Vec<u8> = row.try_get(col)?;
        KeyHash::from_slice(&bytes).ok_or_else(|| StoreError::Invalid(format!("corrupt {col} in the store")))
    };
    Ok(SubscriptionRecord {
        subscription: Subscription {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            scope: Scope::from_columns(&kind, target)?,
            state: State::parse(&state)?,
            expires_at: row.try_get("expires_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        },
        primary: digest("primary_hash")?,
        secondary: digest("secondary_hash")?,
        rev: row.try_get("rev")?,
    })
}

fn check_name(name: &str) -> Result<&str, StoreError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid("a subscription name has 1 to 128 printable characters".into()));
    }
    Ok(name)
}

fn check_target(scope: &Scope) -> Result<(), StoreError> {
    match scope {
        Scope::Product(t) | Scope::Api(t) if t.trim().is_empty() || t.len() > 128 => {
            Err(StoreError::Invalid("the product or API name of a scope is empty or too long".into()))
        }
        _ => Ok(()),
    }
}

fn new_id() -> Result<String, StoreError> {
    let mut b = [0u8; 8];
    rand::rngs::OsRng.try_fill_bytes(&mut b).map_err(|_| StoreError::Random)?;
    let mut id = String::with_capacity(20);
    id.push_str("sub_");
    for x in b {
        id.push_str(&format!("{x:02x}"));
    }
    Ok(id)
}

fn generate() -> Result<SubscriptionKey, StoreError> {
    SubscriptionKey::generate().map_err(|_| StoreError::Random)
}

fn map_unique(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict("the name or a key is already used by another subscription".into())
        }
        _ => StoreError::Db(e),
    }
}

const BUMP_REV: &str = "UPDATE store_meta SET value = value + 1 WHERE name = 'rev' RETURNING value";
const FIND: &str = "SELECT id, name, scope_kind, scope_target, state, primary_hash, secondary_hash, expires_at, \
                    created_at, updated_at, rev FROM subscriptions WHERE id = $1 OR name = $1 \
                    ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1";
const KEY_IN_USE: &str = "SELECT COUNT(*) FROM subscriptions WHERE primary_hash = $1 OR secondary_hash = $1";

impl Store {
    /// Creates a subscription; generated keys come back once in [`IssuedKeys`].
    pub async fn create_subscription(&self, new: NewSubscription) -> Result<(Subscription, IssuedKeys), StoreError> {
        let name = check_name(&new.name)?.to_owned();
        check_target(&new.scope)?;
        if let (Some(p), Some(s)) = (&new.primary_key, &new.secondary_key) {
            if p == s {
                return Err(StoreError::Invalid("the primary and secondary keys must differ".into()));
            }
        }
        let id = new_id()?;
        let (primary, issued_primary) = match new.primary_key {
            Some(k) => (k, None),
            None => {
                let k = generate()?;
                (k.clone(), Some(k))
            }
        };
        let (secondary, issued_secondary) = match new.secondary_key {
            Some(k) => (k, None),
            None => {
                let k = generate()?;
                (k.clone(), Some(k))
            }
        };
        let (ph, sh) = (primary.hash(), secondary.hash());
        let (kind, target) = new.scope.to_columns();
        let now = unix_now();
        with_pool!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let rev: i64 = sqlx::query_scalar(BUMP_REV).fetch_one(&mut *tx).await?;
            let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM subscriptions WHERE name = $1")
                .bind(&name)
                .fetch_one(&mut *tx)
                .await?;
            if taken > 0 {
                return Err(StoreError::Conflict(format!("a subscription named `{name}` exists")));
            }
            for h in [ph, sh] {
                let used: i64 = sqlx::query_scalar(KEY_IN_USE).bind(&h.0[..]).fetch_one(&mut *tx).await?;
                if used > 0 {
                    return Err(StoreError::Conflict("a key is already used by another subscription".into()));
                }
            }
            sqlx::query(
                "INSERT INTO subscriptions (id, name, scope_kind, scope_target, state, primary_hash, secondary_hash, \
                 expires_at, created_at, updated_at, rev) VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $8, $9)",
            )
            .bind(&id)
            .bind(&name)
            .bind(kind)
            .bind(target)
            .bind(&ph.0[..])
            .bind(&sh.0[..])
            .bind(new.expires_at)
            .bind(now)
            .bind(rev)
            .execute(&mut *tx)
            .await
            .map_err(map_unique)?;
            tx.commit().await?;
        });
        let sub = Subscription {
            id,
            name,
            scope: new.scope,
            state: State::Active,
            expires_at: new.expires_at,
            created_at: now,
            updated_at: now,
        };
        Ok((sub, IssuedKeys { primary: issued_primary, secondary: issued_secondary }))
    }

    /// All subscriptions, oldest first.
    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM subscriptions ORDER BY created_at, id");
        with_pool!(&self.db, |pool| {
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            rows.iter().map(|r| record_from_row(r).map(|rec| rec.subscription)).collect()
        })
    }

    /// One subscription by id or name (an id wins when both match).
    pub async fn find_subscription(&self, id_or_name: &str) -> Result<Subscription, StoreError> {
        with_pool!(&self.db, |pool| {
            match sqlx::query(FIND).bind(id_or_name).fetch_optional(pool).await? {
                Some(row) => Ok(record_from_row(&row)?.subscription),
                None => Err(StoreError::NotFound(id_or_name.to_owned())),
            }
        })
    }

    /// Replaces one key (the other keeps working); returns the new key in clear when it was
    /// generated, `None` when the operator supplied it.
    pub async fn regenerate_key(
        &self,
        id_or_name: &str,
        slot: KeySlot,
        explicit: Option<SubscriptionKey>,
    ) -> Result<(Subscription, Option<SubscriptionKey>), StoreError> {
        let (key, issued) = match explicit {
            Some(k) => (k, None),
            None => {
                let k = generate()?;
                (k.clone(), Some(k))
            }
        };
        let h = key.hash();
        let sql = match slot {
            KeySlot::Primary => "UPDATE subscriptions SET primary_hash = $1, updated_at = $2, rev = $3 WHERE id = $4",
            KeySlot::Secondary => {
                "UPDATE subscriptions SET secondary_hash = $1, updated_at = $2, rev = $3 WHERE id = $4"
            }
        };
        let now = unix_now();
        let mut sub = with_pool!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let rev: i64 = sqlx::query_scalar(BUMP_REV).fetch_one(&mut *tx).await?;
            let Some(row) = sqlx::query(FIND).bind(id_or_name).fetch_optional(&mut *tx).await? else {
                return Err(StoreError::NotFound(id_or_name.to_owned()));
            };
            let sub = record_from_row(&row)?.subscription;
            if sub.state == State::Cancelled {
                return Err(StoreError::Conflict(format!("subscription `{}` is cancelled", sub.name)));
            }
            let used: i64 = sqlx::query_scalar(KEY_IN_USE).bind(&h.0[..]).fetch_one(&mut *tx).await?;
            if used > 0 {
                return Err(StoreError::Conflict("that key is already in use".into()));
            }
            sqlx::query(sql)
                .bind(&h.0[..])
                .bind(now)
                .bind(rev)
                .bind(&sub.id)
                .execute(&mut *tx)
                .await
                .map_err(map_unique)?;
            tx.commit().await?;
            sub
        });
        sub.updated_at = now;
        Ok((sub, issued))
    }

    /// Moves a subscription to `target`: suspend (active → suspended), resume (suspended →
    /// active) or cancel (→ cancelled, final). Asking for the current state changes nothing.
    pub async fn set_state(&self, id_or_name: &str, target: State) -> Result<Subscription, StoreError> {
        self.update(id_or_name, |sub| {
            match (sub.state, target) {
                (from, to) if from == to => return Ok(false),
                (State::Cancelled, _) => {
                    return Err(StoreError::Conflict(format!(
                        "subscription `{}` is cancelled; create a new one instead",
                        sub.name
                    )))
                }
                _ => sub.state = target,
            }
            Ok(true)
        })
        .await
    }

    /// Sets or clears (`None`) the expiry time (Unix seconds).
    pub async fn set_expiry(&self, id_or_name: &str, expires_at: Option<i64>) -> Result<Subscription, StoreError> {
        self.update(id_or_name, |sub| {
            if sub.state == State::Cancelled {
                return Err(StoreError::Conflict(format!("subscription `{}` is cancelled", sub.name)));
            }
            let changed = sub.expires_at != expires_at;
            sub.expires_at = expires_at;
            Ok(changed)
        })
        .await
    }

    /// Reads, changes (state and expiry only) and writes back one subscription in a transaction.
    async fn update(
        &self,
        id_or_name: &str,
        change: impl FnOnce(&mut Subscription) -> Result<bool, StoreError>,
    ) -> Result<Subscription, StoreError> {
        let now = unix_now();
        with_pool!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            let rev: i64 = sqlx::query_scalar(BUMP_REV).fetch_one(&mut *tx).await?;
            let Some(row) = sqlx::query(FIND).bind(id_or_name).fetch_optional(&mut *tx).await? else {
                return Err(StoreError::NotFound(id_or_name.to_owned()));
            };
            let mut sub = record_from_row(&row)?.subscription;
            if !change(&mut sub)? {
                // Nothing to write; the bumped revision is rolled back with the transaction.
                return Ok(sub);
            }
            sub.updated_at = now;
            sqlx::query(
                "UPDATE subscriptions SET state = $1, expires_at = $2, updated_at = $3, rev = $4 WHERE id = $5",
            )
            .bind(sub.state.as_str())
            .bind(sub.expires_at)
            .bind(now)
            .bind(rev)
            .bind(&sub.id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(sub)
        })
    }

    /// Subscriptions written after revision `rev` (all of them for 0), in revision order: what
    /// the in-memory index polls.
    pub async fn changes_since(&self, rev: i64) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM subscriptions WHERE rev > $1 ORDER BY rev");
        with_pool!(&self.db, |pool| {
            let rows = sqlx::query(&sql).bind(rev).fetch_all(pool).await?;
            rows.iter().map(record_from_row).collect()
        })
    }
}
